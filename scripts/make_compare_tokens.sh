#!/usr/bin/env bash
# The training data of scripts/train_torch_compare.sh: the first books (in
# name order) of ../shared/data/text/gutenberg.tar.xz, whole books until at
# least MB megabytes of text (default 8), one paragraph per line (the trainer
# puts EOS after each line, as scripts/train_reference_model.sh does),
# tokenised by models/podkv-ref's tokenizer into a podkv token file (podkv
# tokenize-data). Deterministic: the same MB gives the same file.
#   scripts/make_compare_tokens.sh OUT_FILE [MB]      (PODKV=path/to/podkv, default build/podkv)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?token file to write, e.g. .data/gutenberg.tokens}
mb=${2:-8}
podkv=${PODKV:-$root/build/podkv}
archive=${ARCHIVE:-$root/../shared/data/text/gutenberg.tar.xz}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tar -xJf "$archive" -C "$work"
mkdir "$work/paragraphs"
books=()
bytes=0
while IFS= read -r book; do
  text="$work/paragraphs/$(basename "$book")"
  awk 'BEGIN{RS="";ORS="\n"} {gsub(/\r/,""); gsub(/\n/," "); print}' "$book" > "$text"
  books+=("$text")
  bytes=$((bytes + $(stat -c %s "$text")))
  [ "$bytes" -ge $((mb * 1000000)) ] && break
done < <(find "$work" -type f -name '*.txt' -not -path "$work/paragraphs/*" | LC_ALL=C sort)
echo "${#books[@]} books, $bytes bytes of text" >&2
mkdir -p "$(dirname "$out")"
"$podkv" tokenize-data --tokenizer "$root/models/podkv-ref" --data "${books[@]}" --out "$out"
