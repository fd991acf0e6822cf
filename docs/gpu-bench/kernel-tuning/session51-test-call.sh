#!/usr/bin/env bash
# Session 51, call 4: scripts/test_gpu.sh whole on the tree with decode attention's fold (it builds
# build-cuda itself), then the bench's batches at 8K where the fold applies, fold against
# PODKV_CUDA_DECODE_CLUSTER=0, and batch 1 at 4K (the fold does not apply there: the same kernels).
# Carry [".deps", ".data/run"] (docs/ and the long models' weights out of the index):
#   OUT=$OUT bash .data/run/session51-test-call.sh
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
JOBS=16 timeout -k 5 ${TEST_LIMIT:-420} scripts/test_gpu.sh "$root/build-cuda" /tmp/gl >"$out/test_gpu.txt" 2>&1
echo "test_gpu rc $? ($SECONDS s)"
grep -E "cases|launches merged|FAIL|PASSED|ALL OK|NOT RUN|left out" "$out/test_gpu.txt" | head -60
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2)
# shellcheck disable=SC2086  # $1 is several arguments
tg() { echo "$1, PODKV_CUDA_DECODE_CLUSTER=$2: $(timeout 90 env PODKV_CUDA_DECODE_CLUSTER="$2" build-cuda/podkv "${a[@]}" $1 | grep tg | cut -d'|' -f6-12)"; }
for pass in 1 2; do
  for s in "-d 8192 -b 12" "-d 8192 -b 16" "-d 8192 -b 20" "-d 8192 -b 24" "-d 8192 -b 32"; do for m in 1 0; do tg "$s" $m; done; done
done
for m in 1 0; do tg "-d 4096" $m; done
echo "done ($SECONDS s)"
