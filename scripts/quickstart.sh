#!/usr/bin/env bash
# Installs what podkv needs, builds it and generates text with the built-in
# default model: models/podkv-ref, a small Llama trained from scratch by
# `podkv train` (scripts/train_reference_model.sh), with its pod.json from
# `podkv analyze`. Arguments go to `podkv generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target podkv_cli
if [ $# -eq 0 ]; then set -- -p "It was a dark and stormy night, and" -n 48 --kv pod; fi
build/podkv generate -m models/podkv-ref "$@"
