#!/usr/bin/env bash
# Session 53, the benchmark on the landed tree (0cd152d) with podkv built on the workstation
# (.data/binz60/bin.tgz): bench_gpu.sh parts 1, 2, 3 (on an H200 under 96 GiB of cache; on an H100 under
# 48 GiB, the script's rule), then part 4 (transformers on the same shapes) in the time left.
# Carry [".data/binz60", ".data/run"]:   OUT=$OUT LIMIT=N bash .data/run/session53-bench-call.sh
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
limit=${LIMIT:-560}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
b=/tmp/b60; mkdir -p $b && tar xzf .data/binz60/bin.tgz -C $b || { echo "no .data/binz60/bin.tgz"; exit 1; }
cat $b/PROVENANCE
for p in 1 2 3 4; do
  rem=$((limit - SECONDS)); [ $rem -gt 30 ] || { echo "part $p skipped (time)"; continue; }
  timeout -k 5 $rem env PARTS=$p scripts/bench_gpu.sh "$b" "$out/bench" >"$out/bench-part$p.txt" 2>&1
  echo "part $p rc $? ($SECONDS s)"
done
cat "$out"/bench-part*.txt | grep -vE "^\| --- "
echo "done ($SECONDS s)"
