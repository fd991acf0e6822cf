#!/usr/bin/env bash
# Session 53, first call: build podkv (test_gpu.sh's configuration), bench_gpu.sh part 1 (the issue's
# batch-1 goal; on an H200 last measured in session 47), an A/B of the decode chain at one block a
# multiprocessor (PODKV_CUDA_CHAIN_BLOCKS=1: half the register file left free, so that the attention
# launched after it could be resident during its last stage), then scripts/test_gpu.sh whole on the
# landed tree (session 52's greedy draw over slices, the 2-to-8-row GEMV's register cap as its default,
# the tickets zeroed by fill_zero) in the time left. Carry [".deps", ".data/run"]:
#   OUT=$OUT LIMIT=N bash .data/run/session53-first-call.sh
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
limit=${LIMIT:-580}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); echo "$gpu"
[ "$root" = /work/main ] || [ -e /work/main ] || { mkdir -p /work && ln -s "$root" /work/main && echo "linked /work/main -> $root"; }
b=$root/build-cuda
. scripts/use_deps_pcre2.sh; use_deps_pcre2 "$root"; . scripts/use_deps_httplib.sh; use_deps_httplib "$root"
cmake -S . -B "$b" -DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF -DPODKV_TESTS=ON >/tmp/configure.log 2>&1 ||
  { tail -20 /tmp/configure.log; exit 1; }
timeout 300 cmake --build "$b" -j 16 --target podkv_cli >/tmp/build.log 2>&1 || { grep -E "error" /tmp/build.log | head -30; exit 1; }
echo "podkv built ($SECONDS s)"
timeout -k 5 120 env PARTS=1 scripts/bench_gpu.sh "$b" "$out/bench" >"$out/bench-part1.txt" 2>&1
echo "bench part 1 rc $? ($SECONDS s)"; grep -E "copy|pp|tg" "$out/bench-part1.txt" | cut -d'|' -f5-12 | head -12
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2)
# shellcheck disable=SC2086  # $1 is several arguments
tg() { echo "$1, $2: $(timeout 60 env $2 "$b/podkv" "${a[@]}" $1 | grep tg | cut -d'|' -f6-12)"; }
for pass in 1 2; do for s in PODKV_NONE=0 PODKV_CUDA_CHAIN_BLOCKS=1; do tg "-d 4096" $s; done; done
echo "-- test_gpu.sh ($SECONDS s)"
JOBS=16 timeout -k 5 $((limit - SECONDS - 10)) scripts/test_gpu.sh "$b" "$out/gl" >"$out/test_gpu.txt" 2>&1
echo "test_gpu rc $? ($SECONDS s)"
grep -E "cases|FAIL|PASSED|ALL OK|NOT RUN|left out|rc [1-9]" "$out/test_gpu.txt" | head -80
echo "done ($SECONDS s)"
