#!/usr/bin/env bash
# Session 52, the call after session52-test-call.sh on the same warm machine (build-cuda built there):
# on an H200, bench_gpu.sh part 1 first (the batch-1 goal; last measured there in session 47);
# then session 51's two experiments on their prebuilt binaries (session52-combo-call.sh's parts), as
# time allows. Carry [".data/binz56", ".data/binz57", ".data/run"]:
#   OUT=$OUT LIMIT=N bash .data/run/session52-second-call.sh
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
limit=${LIMIT:-380}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); echo "$gpu"
if [[ $gpu == *H200* ]] && [ -x build-cuda/podkv ]; then
  timeout -k 5 200 env PARTS=1 scripts/bench_gpu.sh "$root/build-cuda" "$out/bench" >"$out/bench-part1.txt" 2>&1
  echo "bench part 1 rc $? ($SECONDS s)"; grep -E "copy|pp|tg" "$out/bench-part1.txt" | head -12
fi
rem=$((limit - SECONDS))
if [ $rem -gt 150 ]; then
  mkdir -p "$out/fusion"; OUT=$out/fusion timeout -k 5 $((rem > 250 ? 250 : rem - 10)) bash .data/run/session51-split-sum-fusion-call.sh
  echo "fusion rc $? ($SECONDS s)"; cat "$out/fusion/summary.txt"
fi
rem=$((limit - SECONDS))
if [ $rem -gt 100 ]; then
  mkdir -p "$out/variants"; OUT=$out/variants timeout -k 5 $((rem - 10)) bash .data/run/session51-gemv-variants-call.sh
  echo "variants rc $? ($SECONDS s)"; cat "$out/variants/summary.txt"
fi
echo "done ($SECONDS s)"
