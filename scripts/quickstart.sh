#!/usr/bin/env bash
# Installs what podkv needs, builds it, creates the built-in default model (a
# tiny random Llama with the project's own byte-level BPE tokenizer) and
# generates text with it. Arguments go to `podkv generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target podkv_cli
model=build/default-model
if [ ! -f "$model/config.json" ]; then
  build/podkv create-model --preset tiny --tokenizer tests/fixtures/tokenizers/bpe_llama3/tokenizer.json --out "$model"
fi
if [ $# -eq 0 ]; then set -- -p "Once upon a time" -n 32; fi
build/podkv generate -m "$model" "$@"
