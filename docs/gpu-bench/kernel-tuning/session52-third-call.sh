#!/usr/bin/env bash
# Session 52, third call: (1) the step-ends patch (binz58) against the landed tree (binz56's default
# kernels: 11bcbdc), batch-1 decode at 4K and 32K, interleaved; (2) the 2-to-8-row GEMV under a
# minimum of 5 blocks a multiprocessor (binz56, PODKV_CUDA_GEMV_MMA_GROUP=45) against the default at
# batches 2, 4, 8 (8K) and 8 (32K), interleaved. Carry [".data/binz56", ".data/binz58", ".data/run"]:
#   OUT=$OUT bash .data/run/session52-third-call.sh
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for n in 56 58; do mkdir -p /tmp/b$n && tar xzf .data/binz$n/bin.tgz -C /tmp/b$n || exit 1; done
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2)
# shellcheck disable=SC2086  # $2 is several arguments
tg() { echo "$1 $2, $3: $(timeout 60 env $3 /tmp/b$1/podkv "${a[@]}" $2 | grep tg | cut -d'|' -f6-12)"; }
for pass in 1 2 3; do for n in 58 56; do tg $n "-d 4096" PODKV_NONE=0; done; done
for n in 58 56; do tg $n "-d 32735" PODKV_NONE=0; done
for pass in 1 2; do
  for s in "-d 8192 -b 8" "-d 8192 -b 4" "-d 8192 -b 2" "-d 32735 -b 8"; do
    for g in PODKV_CUDA_GEMV_MMA_GROUP=45 PODKV_NONE=0; do tg 56 "$s" $g; done
  done
done
echo "done ($SECONDS s)"
