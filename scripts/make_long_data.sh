#!/usr/bin/env bash
# The training data of scripts/train_long_model.sh, made once: the Project
# Gutenberg books of ../shared/data/text/gutenberg.tar.xz and WikiText-2
# (../shared/data/text/wikitext-2-raw-test.txt), tokenised by models/podkv-ref's
# tokenizer (or TOKENIZER, a directory with a tokenizer.json, e.g.
# configs/podkv-ref-digits) into podkv token files (podkv tokenize-data).
#
# Which text: every English book (a book counts as English when " the " occurs
# more often than " de " in its first 200 KB: this drops the 9 French books and
# one Spanish one), each title once (2600-0.txt and pg2600.txt are both War and
# Peace: the first in name order is kept), with its Project Gutenberg header
# and licence cut off (the text between the "*** START OF" and "*** END OF"
# lines, when the book has them), one paragraph per line (the trainer puts EOS
# after each line). The last books in name order, at least HELDOUT_MB
# megabytes of them, are held out; the others (at most BOOKS_MB megabytes of
# them, 0 = all) and WikiText-2 are the training text. Deterministic: the same
# settings give the same bytes.
#
# Writes into OUT_DIR:
#   train.tokens     WikiText-2 (CR removed), then the training books, in name order
#   heldout.tokens   the held-out books (train_long_model.sh appends it to --data and
#                    holds exactly it out with --val-fraction)
#   heldout.txt      the held-out books as text (the haystack of the niah acceptance check)
#   manifest.txt     the books of each part with their bytes, the token counts and settings
# and, with PACK=1 (default), OUT_DIR.tar.xz: the same four files packed (about a
# quarter of the size), which is what travels to the GPU machine; train_long_model.sh
# unpacks it when OUT_DIR is absent.
#   scripts/make_long_data.sh OUT_DIR
#   (env: PODKV (default build/podkv), TOKENIZER (default models/podkv-ref), ARCHIVE, WIKITEXT, BOOKS_MB (0), HELDOUT_MB (1),
#    PACK (1), XZ_THREADS (1))
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: make_long_data.sh OUT_DIR (e.g. .data/long)}
podkv=${PODKV:-$root/build/podkv}
archive=${ARCHIVE:-$root/../shared/data/text/gutenberg.tar.xz}
wikitext=${WIKITEXT:-$root/../shared/data/text/wikitext-2-raw-test.txt}
books_mb=${BOOKS_MB:-0}
heldout_mb=${HELDOUT_MB:-1}
tokenizer=${TOKENIZER:-$root/models/podkv-ref}
[ -x "$podkv" ] || { echo "no podkv at $podkv (set PODKV)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LC_ALL=C

mkdir -p "$work/src" "$work/books"
tar -xJf "$archive" -C "$work/src"
bom=$(printf '\357\273\277')
kept=()
declare -A seen_title
while IFS= read -r book; do
  name=$(basename "$book")
  # Lines without BOM and CR; only the text between the Project Gutenberg markers when there are any.
  awk -v bom="$bom" '
    NR == 1 && index($0, bom) == 1 { $0 = substr($0, 4) }
    { gsub(/\r/, "") }
    /^[ \t]*\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG/ { n = 0; next }
    /^[ \t]*\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG/ { exit }
    { line[++n] = $0 }
    END { for (i = 1; i <= n; ++i) print line[i] }' "$book" > "$work/lines"
  english=$(head -c 200000 "$work/lines" | tr 'A-Z' 'a-z' |
            awk '{ t += gsub(/ the /, ""); d += gsub(/ de /, "") } END { print (t > d) ? 1 : 0 }')
  if [ "$english" != 1 ]; then
    echo "skip $name: not English" >&2
    continue
  fi
  title=$(head -c 20000 "$book" | tr -d '\r' | sed -n 's/^Title: *//p' | head -1 | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9')
  [ -n "$title" ] || title=$name
  if [ -n "${seen_title[$title]:-}" ]; then
    echo "skip $name: the same title as ${seen_title[$title]}" >&2
    continue
  fi
  seen_title[$title]=$name
  # One paragraph per line.
  awk 'BEGIN { RS = ""; ORS = "\n" } { gsub(/\n/, " "); print }' "$work/lines" > "$work/books/$name"
  kept+=("$name")
done < <(find "$work/src" -type f -name '*.txt' | sort)

# Held out: the last books in name order, at least HELDOUT_MB megabytes.
heldout=()
bytes=0
for ((i = ${#kept[@]} - 1; i >= 0 && bytes < heldout_mb * 1000000; --i)); do
  heldout=("${kept[i]}" "${heldout[@]}")
  bytes=$((bytes + $(stat -c %s "$work/books/${kept[i]}")))
done
train=()
bytes=0
for ((j = 0; j <= i; ++j)); do
  [ "$books_mb" -gt 0 ] && [ "$bytes" -ge $((books_mb * 1000000)) ] && break
  train+=("${kept[j]}")
  bytes=$((bytes + $(stat -c %s "$work/books/${kept[j]}")))
done

mkdir -p "$out"
rm -f "$out/train.tokens" "$out/heldout.tokens" "$out/heldout.txt" "$out/manifest.txt"
tr -d '\r' < "$wikitext" > "$work/wikitext-2-raw-test.txt"
"$podkv" tokenize-data --tokenizer "$tokenizer" --data "$work/wikitext-2-raw-test.txt" "${train[@]/#/$work/books/}" \
  --out "$out/train.tokens"
cat "${heldout[@]/#/$work/books/}" > "$out/heldout.txt"
"$podkv" tokenize-data --tokenizer "$tokenizer" --data "$out/heldout.txt" --out "$out/heldout.tokens"

tokens() { od -An -t u8 -j 32 -N 8 "$1" | tr -d ' '; }  # the token count N of the file's header
{
  echo "# scripts/make_long_data.sh: tokenizer $(basename "$tokenizer") (sha256 $(sha256sum "$tokenizer/tokenizer.json" | cut -c1-16)), BOOKS_MB=$books_mb HELDOUT_MB=$heldout_mb"
  echo "# $(basename "$archive"): ${#kept[@]} English books with distinct titles; $(basename "$wikitext")"
  echo "train.tokens $(tokens "$out/train.tokens") tokens: $(basename "$wikitext") ($(stat -c %s "$work/wikitext-2-raw-test.txt") bytes) and ${#train[@]} books"
  for b in "${train[@]}"; do echo "  train $b $(stat -c %s "$work/books/$b")"; done
  echo "heldout.tokens $(tokens "$out/heldout.tokens") tokens: ${#heldout[@]} books ($(stat -c %s "$out/heldout.txt") bytes, heldout.txt)"
  for b in "${heldout[@]}"; do echo "  heldout $b $(stat -c %s "$work/books/$b")"; done
} > "$out/manifest.txt"
grep -v '^  ' "$out/manifest.txt" >&2
if [ "${PACK:-1}" = 1 ]; then
  XZ_OPT="-6 -T${XZ_THREADS:-1}" tar -cJf "$out.tar.xz.tmp" -C "$out" train.tokens heldout.tokens heldout.txt manifest.txt
  mv "$out.tar.xz.tmp" "$out.tar.xz"
fi
ls -l "$out"/* >&2
[ "${PACK:-1}" != 1 ] || ls -l "$out.tar.xz" >&2
