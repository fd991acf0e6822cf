#!/usr/bin/env bash
# Trains podkv's small reference model from scratch with `podkv train`: a
# 6-layer Llama (configs/podkv-ref/config.json, ~3.8M parameters, 4 KV heads)
# with the project's byte-level BPE tokenizer, on paragraphs of 40 Project
# Gutenberg books (../shared/data/text/gutenberg.tar.xz), 1024-token sequences.
# Usage: scripts/train_reference_model.sh OUT_DIR [STEPS] [THREADS]
set -euo pipefail
out=${1:?usage: train_reference_model.sh OUT_DIR [STEPS] [THREADS]}
steps=${2:-400}
threads=${3:-$(nproc)}
podkv=${PODKV:-build/podkv}
books=.cache/books-train.txt
if [ ! -f "$books" ]; then
  mkdir -p .cache/books
  [ -d .cache/gutenberg ] || tar -xJf ../shared/data/text/gutenberg.tar.xz -C .cache
  # One paragraph per line: the trainer joins lines with EOS.
  for f in $(ls .cache/gutenberg/*.txt | sort | head -40); do
    awk 'BEGIN{RS="";ORS="\n"} {gsub(/\r/,""); gsub(/\n/," "); print}' "$f" > ".cache/books/$(basename "$f")"
  done
  cat .cache/books/*.txt > "$books"
fi
"$podkv" train --config configs/podkv-ref/config.json \
  --tokenizer tests/fixtures/tokenizers/bpe_llama3/tokenizer.json \
  --data "$books" --seq-len 1024 --batch 4 --steps "$steps" --lr 2e-3 --warmup 30 \
  --save-every 50 --eval-every 100 --val-fraction 0.01 --out "$out" -t "$threads"
