#!/usr/bin/env bash
# Installs what podkv needs, builds it and shows what PoD is for, on the
# built-in long-context model (models/podkv-long, 23.7M parameters, 4160-token
# context, trained by podkv on a GPU: docs/long-model) and its PoD-adapted twin
# (models/podkv-long-pod, with the pod.json of podkv analyze): a passkey hidden
# 10% into a 4096-token prompt, answered with the dense cache, the PoD cache
# and StreamingLLM (16 sink + 1008 recent tokens), each with the KV bytes it
# held (podkv eval --show-answers; about 4 s on 2 cores once built).
# With arguments, they go to `podkv generate -m models/podkv-long-pod`
# (e.g. scripts/quickstart.sh -p "It was a dark and stormy night" -n 48 --kv pod).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target podkv_cli
if [ $# -gt 0 ]; then
  exec build/podkv generate -m models/podkv-long-pod "$@"
fi
build/podkv eval -m models/podkv-long --task passkey --lengths 4096 --depths 10 --seed 0 \
  --kv dense,pod:model=models/podkv-long-pod:name=pod,streaming:recent=1008:name=streaming \
  --sink 16 --recent 256 --no-progress --show-answers --out "${TMPDIR:-/tmp}/podkv-quickstart"
