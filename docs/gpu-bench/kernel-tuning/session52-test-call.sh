#!/usr/bin/env bash
# Session 52: the session's changes first (the greedy argmax over slices, the embedding's loads in
# flight, the final norm reading x where the logit rows are every row), then scripts/test_gpu.sh whole
# in the time left. 1. build (test_gpu.sh's configuration); 2. the matmul op cases (the 2-to-8-row
# GEMV's 200 x 4192 case, groups 4, 2, 8) and the gtests that cover the change; 3. batch-1 decode,
# the greedy argmax against PODKV_CUDA_SAMPLE_GREEDY=0 (the general kernel), interleaved; 4. Nsight
# Compute's durations of the step's first and last kernels; 5. scripts/test_gpu.sh.
# Carry [".deps", ".data/run"] (docs/ and the long models' weights out of the index):
#   OUT=$OUT LIMIT=N bash .data/run/session52-test-call.sh
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
limit=${LIMIT:-570}
within() { local n=$1 rem=$((limit - SECONDS)); shift; [ $rem -ge 15 ] || { echo "skipped (time): $*"; return 124; }
  timeout -k 5 $((n < rem ? n : rem)) "$@"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
b=$root/build-cuda
cmake -S . -B "$b" -DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF -DPODKV_TESTS=ON >/tmp/configure.log 2>&1 ||
  { tail -20 /tmp/configure.log; exit 1; }
within 300 cmake --build "$b" -j 16 --target podkv_cli podkv_tests podkv_test_backend_ops >/tmp/build.log 2>&1 ||
  { grep -E "error" /tmp/build.log | head -30; exit 1; }
echo "build ok ($SECONDS s)"
for s in PODKV_NONE=0 PODKV_CUDA_GEMV_MMA_GROUP=2 PODKV_CUDA_GEMV_MMA_GROUP=8; do
  within 120 env $s OMP_WAIT_POLICY=PASSIVE "$b/podkv_test_backend_ops" --op matmul --backend cuda >/tmp/op.log 2>&1
  echo "matmul, $s: rc $?, $(tail -1 /tmp/op.log)"; grep -E "FAIL|4192" /tmp/op.log | grep cuda | head -5
done
within 200 "$b/podkv_tests" --gtest_filter='CudaSampling.*:Models/CudaFixture.*:CudaGraphs.*:CudaDecodeChain.*' >"$out/gtests.txt" 2>&1
echo "gtests rc $? ($SECONDS s): $(grep -E '^\[  (PASSED|FAILED)' "$out/gtests.txt" | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure" "$out/gtests.txt" | head -20
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64)
# shellcheck disable=SC2086  # $1 is several arguments
tg() { echo "$1, PODKV_CUDA_SAMPLE_GREEDY=$2: $(within 60 env PODKV_CUDA_SAMPLE_GREEDY="$2" "$b/podkv" "${a[@]}" -p 0 -n 32 -r 2 $1 | grep tg | cut -d'|' -f6-12)"; }
for pass in 1 2 3; do for g in 1 0; do tg "-d 4096" $g; done; done
for g in 1 0; do tg "-d 8192 -b 8" $g; done
for g in 1 0; do
  within 90 env PODKV_CUDA_SAMPLE_GREEDY=$g "$(command -v ncu)" --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum --csv -k regex:"embedding|greedy|sample_rows|rms_norm|gather" \
    "$b/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_ends_g$g.csv" 2>/tmp/ncu.err; echo "ncu greedy $g rc $?"
  grep '^"' "$out/ncu_ends_g$g.csv" | awk -F'","' '{print $5, $NF}' | tail -8
done
echo "-- test_gpu.sh ($SECONDS s)"
JOBS=16 within 600 scripts/test_gpu.sh "$b" /tmp/gl >"$out/test_gpu.txt" 2>&1
echo "test_gpu rc $? ($SECONDS s)"
grep -E "cases|FAIL|PASSED|ALL OK|NOT RUN|left out" "$out/test_gpu.txt" | head -80
echo "done ($SECONDS s)"
