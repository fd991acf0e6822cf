#!/usr/bin/env bash
# Session 52: session52-step-ends-untested.patch on binaries built on the workstation (the device
# budget left no room for a build there): .data/binz58/bin.tgz (podkv, podkv_tests,
# podkv_test_backend_ops; PROVENANCE). podkv_tests finds the fixtures under the workstation's
# /work/main (PODKV_SOURCE_DIR): a link to this tree where that path is absent. 1. the matmul op cases
# (the 2-to-8-row GEMV's 200 x 4192 case, groups 4, 2, 8); 2. the gtests that cover the change;
# 3. batch-1 decode, the greedy argmax against PODKV_CUDA_SAMPLE_GREEDY=0, interleaved; 4. Nsight
# Compute's durations of the step's first and last kernels. Carry [".data/binz58", ".data/run"]:
#   OUT=$OUT LIMIT=N bash .data/run/session52-prebuilt-call.sh
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
limit=${LIMIT:-400}
within() { local n=$1 rem=$((limit - SECONDS)); shift; [ $rem -ge 15 ] || { echo "skipped (time): $*"; return 124; }
  timeout -k 5 $((n < rem ? n : rem)) "$@"; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
b=/tmp/b58
mkdir -p $b && tar xzf .data/binz58/bin.tgz -C $b || { echo "no .data/binz58/bin.tgz"; exit 1; }
cat $b/PROVENANCE
[ "$root" = /work/main ] || [ -e /work/main ] || { mkdir -p /work && ln -s "$root" /work/main && echo "linked /work/main -> $root"; }
for s in PODKV_NONE=0 PODKV_CUDA_GEMV_MMA_GROUP=2 PODKV_CUDA_GEMV_MMA_GROUP=8; do
  within 60 env $s OMP_WAIT_POLICY=PASSIVE $b/podkv_test_backend_ops --op matmul --backend cuda >/tmp/op.log 2>&1
  echo "matmul, $s: rc $?, $(tail -1 /tmp/op.log)"; grep -E "FAIL|4192" /tmp/op.log | grep cuda | head -5
done
within 150 $b/podkv_tests --gtest_filter='CudaSampling.*:Models/CudaFixture.*:CudaGraphs.*:CudaDecodeChain.*' >"$out/gtests.txt" 2>&1
echo "gtests rc $? ($SECONDS s): $(grep -E '^\[  (PASSED|FAILED)' "$out/gtests.txt" | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure|SKIPPED" "$out/gtests.txt" | head -20
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64)
# shellcheck disable=SC2086  # $1 is several arguments
tg() { echo "$1, PODKV_CUDA_SAMPLE_GREEDY=$2: $(within 60 env PODKV_CUDA_SAMPLE_GREEDY="$2" $b/podkv "${a[@]}" -p 0 -n 32 -r 2 $1 | grep tg | cut -d'|' -f6-12)"; }
for pass in 1 2 3; do for g in 1 0; do tg "-d 4096" $g; done; done
for g in 1 0; do
  within 90 env PODKV_CUDA_SAMPLE_GREEDY=$g "$(command -v ncu)" --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum --csv -k regex:"embedding|greedy|sample_rows|rms_norm|gather" \
    $b/podkv "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_ends_g$g.csv" 2>/tmp/ncu.err; echo "ncu greedy $g rc $?"
  grep '^"' "$out/ncu_ends_g$g.csv" | awk -F'","' '{print $5, $NF}' | tail -6
done
for g in 1 0; do tg "-d 8192 -b 8" $g; done
echo "done ($SECONDS s)"
