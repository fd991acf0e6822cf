#!/usr/bin/env bash
# Session 51, call 3: where the decode fold's clusters lose (session51-fold-call.sh found batch 1 at 4K
# 0.98x and batch 8 at 8K 0.93x with clusters of 16 and 4 blocks, batch 32 at 8K 1.016x with one).
# Binaries: .data/binz53/bin.tgz (podkv with the experiment knobs PODKV_CUDA_DECODE_FOLD_SMEM,
# _CLUSTER_MAX and _CLUSTER_INFO). Carry [".data/binz53", ".data/run"]:
#   OUT=$OUT bash .data/run/session51-fold-placement-call.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
b=/tmp/b53
mkdir -p $b && tar xzf .data/binz53/bin.tgz -C $b || { echo "no .data/binz53/bin.tgz"; exit 1; }
cat $b/PROVENANCE
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2)
# $1: the bench's shape; the rest: settings
run() {
  local shape=$1; shift
  echo "$shape, $*: $(timeout 90 env PODKV_CUDA_DECODE_CLUSTER_INFO=1 "$@" $b/podkv "${a[@]}" $shape 2>/tmp/err.txt | grep tg | cut -d'|' -f7-10)"
  grep "^fold" /tmp/err.txt | sort -u | sed 's/^/    /'
}
for pass in 1 2; do
  run "-d 4096" PODKV_CUDA_DECODE_CLUSTER=0
  run "-d 4096" PODKV_CUDA_DECODE_CLUSTER=1
  run "-d 4096" PODKV_CUDA_DECODE_FOLD_SMEM=120000
  run "-d 4096" PODKV_CUDA_DECODE_CLUSTER_MAX=8 PODKV_CUDA_DECODE_SPLIT_KEYS=128
  run "-d 4096" PODKV_CUDA_DECODE_CLUSTER_MAX=8 PODKV_CUDA_DECODE_SPLIT_KEYS=128 PODKV_CUDA_DECODE_FOLD_SMEM=120000
  run "-d 4096" PODKV_CUDA_DECODE_CLUSTER=0 PODKV_CUDA_DECODE_SPLIT_KEYS=128
done
for s in "-d 8192 -b 8" "-d 8192 -b 16" "-d 8192 -b 32"; do
  run "$s" PODKV_CUDA_DECODE_CLUSTER=0
  run "$s" PODKV_CUDA_DECODE_CLUSTER=1
  run "$s" PODKV_CUDA_DECODE_FOLD_SMEM=120000
done
echo "done ($SECONDS s)"
