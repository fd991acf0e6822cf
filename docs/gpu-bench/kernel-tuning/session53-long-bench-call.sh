#!/usr/bin/env bash
# Session 53: session53-long-call.sh (MODEL's LongModelNumerics on the GPU), then on an H200 bench_gpu.sh
# part 1 (batch-1 decode, the goal; last measured on an H200 in session 47) with podkv built on
# the workstation (.data/binz60). Carry [".data/binz60", ".data/binz61", ".data/run"]:
#   OUT=$OUT MODEL=dense bash .data/run/session53-long-bench-call.sh
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
OUT=$out bash .data/run/session53-long-call.sh
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if [[ $gpu == *H200* ]]; then
  export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  b=/tmp/b60; mkdir -p $b && tar xzf .data/binz60/bin.tgz -C $b
  timeout -k 5 150 env PARTS=1 scripts/bench_gpu.sh "$b" "$out/bench" >"$out/bench-part1.txt" 2>&1
  echo "bench part 1 rc $? ($SECONDS s)" >>"$out/bench-part1.txt"
fi
