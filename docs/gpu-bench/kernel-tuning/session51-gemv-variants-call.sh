#!/usr/bin/env bash
# For the next device call (written in session 51, not run): the 2-to-8-row tensor-core GEMV's
# chunks in flight and its split rule, with session51-gemv-variants-untested.patch (experiment knobs:
# PODKV_CUDA_GEMV_MMA_GROUP 3, 5, 6 and 45 / 36 = 4 / 3 chunks under a cap of 96 / 80 registers (5 /
# 6 blocks a multiprocessor), PODKV_CUDA_GEMV_MMA_WAVES=N: N waves of the resident warps instead of
# one). Why: at batch 8 the split into one wave gives gate | up 2 slices, 448 blocks over 132
# multiprocessors (52 of them get 4 blocks, 80 get 3: the last quarter of the projection runs on 52);
# more, smaller blocks let later ones fill the slots that free first. Binaries built on the
# workstation from the landed tree + the patch: .data/binz56/bin.tgz (podkv, podkv_test_backend_ops;
# `PROVENANCE` says from what). Copy this script to .data/run/, docs/ and the long weights out of the
# index (session48-calls.sh says how), carry [".data/binz56", ".data/run"]:
#   OUT=$OUT bash .data/run/session51-gemv-variants-call.sh
# Where .data/binz56 is gone: apply the patch, build podkv_cli and podkv_test_backend_ops, and pack them
# the same way.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
b=/tmp/b56
mkdir -p $b && tar xzf .data/binz56/bin.tgz -C $b || { echo "no .data/binz56/bin.tgz"; exit 1; }
cat $b/PROVENANCE
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# The matmul cases (the 200 x 4192 one reaches this kernel with 3 rows) under each setting.
for s in PODKV_NONE=0 PODKV_CUDA_GEMV_MMA_GROUP=3 PODKV_CUDA_GEMV_MMA_GROUP=45 PODKV_CUDA_GEMV_MMA_WAVES=3; do
  timeout 120 env $s OMP_WAIT_POLICY=PASSIVE $b/podkv_test_backend_ops --op matmul --backend cuda >/tmp/op.log 2>&1
  echo "matmul, $s: rc $?, $(tail -1 /tmp/op.log)"; grep -E "FAIL|4192" /tmp/op.log | grep cuda | head -5
done
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2)
# shellcheck disable=SC2086  # $1 is several arguments, $2 a setting
tg() { echo "$1, $2: $(timeout 90 env $2 $b/podkv "${a[@]}" $1 | grep tg | cut -d'|' -f7-11)"; }
for pass in 1 2; do
  for s in PODKV_NONE=0 PODKV_CUDA_GEMV_MMA_GROUP=3 PODKV_CUDA_GEMV_MMA_GROUP=5 PODKV_CUDA_GEMV_MMA_GROUP=6 \
           PODKV_CUDA_GEMV_MMA_GROUP=45 PODKV_CUDA_GEMV_MMA_GROUP=36 PODKV_CUDA_GEMV_MMA_WAVES=2 \
           PODKV_CUDA_GEMV_MMA_WAVES=3 PODKV_CUDA_GEMV_MMA_WAVES=4; do
    tg "-d 8192 -b 8" "$s"
  done
done
for s in PODKV_NONE=0 PODKV_CUDA_GEMV_MMA_WAVES=2 PODKV_CUDA_GEMV_MMA_WAVES=4; do
  tg "-d 8192 -b 2" "$s"; tg "-d 8192 -b 4" "$s"
done
echo "done ($SECONDS s)"
