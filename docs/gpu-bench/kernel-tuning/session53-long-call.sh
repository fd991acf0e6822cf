#!/usr/bin/env bash
# Session 53: test_gpu.sh's LongModelNumerics step on the landed tree (0cd152d; last run on a GPU in
# session 31) with podkv_tests built on the workstation (.data/binz61/bin.tgz): the trained
# models/podkv-long (MODEL=dense) or its PoD twin (MODEL=pod) reading the held-out book, f32 within 1e-4
# of the CPU, bf16 top-1 agreement >= 99%. One model's 47 MB of weights per call (the tree's 64 MiB:
# docs/, tests/fixtures/models/ and the other models' weights left out of the index).
# Carry [".data/binz61", ".data/run"]:   OUT=$OUT MODEL=dense bash .data/run/session53-long-call.sh
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary-$MODEL.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
b=/tmp/b61; mkdir -p $b && tar xzf .data/binz61/bin.tgz -C $b || { echo "no .data/binz61/bin.tgz"; exit 1; }
cat $b/PROVENANCE
[ "$root" = /work/main ] || [ -e /work/main ] || { mkdir -p /work && ln -s "$root" /work/main && echo "linked /work/main -> $root"; }
ls -la models/podkv-long*/model.safetensors
timeout 200 $b/podkv_tests --gtest_filter="Book/LongModelNumerics.*/$MODEL" 2>&1 | tee "$out/long-$MODEL.txt" | grep -E "numerics|OK|FAILED|PASSED|SKIPPED|Failure"
echo "rc ${PIPESTATUS[0]} ($SECONDS s)"
