#!/usr/bin/env bash
# Session 52, fourth call: the tree to land (the step-ends patch and the 2-to-8-row GEMV's register cap
# for five blocks a multiprocessor as its default) on binaries built on the workstation,
# .data/binz59/bin.tgz: every CUDA op case, the matmul cases under each GEMV setting, the CUDA gtests of
# the forward, two fixtures' logits in prompt steps of 4 rows against transformers, then A/B timings.
# Carry [".data/binz59", ".data/run"]:   OUT=$OUT bash .data/run/session52-fourth-call.sh
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
b=/tmp/b59
mkdir -p $b && tar xzf .data/binz59/bin.tgz -C $b || { echo "no .data/binz59/bin.tgz"; exit 1; }
cat $b/PROVENANCE
[ "$root" = /work/main ] || [ -e /work/main ] || { mkdir -p /work && ln -s "$root" /work/main && echo "linked /work/main -> $root"; }
timeout 120 env OMP_WAIT_POLICY=PASSIVE $b/podkv_test_backend_ops --backend cuda >"$out/ops.txt" 2>&1
echo "every op, cuda: rc $?, $(tail -1 "$out/ops.txt")"; grep FAIL "$out/ops.txt" | head -5
for s in PODKV_CUDA_GEMV_MMA_GROUP=4,0 PODKV_CUDA_GEMV_MMA_GROUP=2 PODKV_CUDA_GEMV_MMA_GROUP=8; do
  timeout 60 env $s OMP_WAIT_POLICY=PASSIVE $b/podkv_test_backend_ops --op matmul --backend cuda >/tmp/op.log 2>&1
  echo "matmul, $s: rc $?, $(tail -1 /tmp/op.log)"; grep FAIL /tmp/op.log | head -5
done
timeout 150 $b/podkv_tests --gtest_filter='CudaSampling.*:Models/CudaFixture.*:CudaGraphs.*:CudaDecodeChain.*:CudaFusedOps.*:CudaPromptPath.*:CudaGemm.*' >"$out/gtests.txt" 2>&1
echo "gtests rc $? ($SECONDS s): $(grep -E '^\[  (PASSED|FAILED)' "$out/gtests.txt" | tr '\n' ' ')"
grep -E "^\[  FAILED|SKIPPED \]" "$out/gtests.txt" | head -20
for model in llama_gqa qwen2_bias; do
  dir=tests/fixtures/models/$model
  timeout 60 $b/podkv logits -m $dir --ids-file $dir/reference.safetensors --chunk 4 --out /tmp/$model.safetensors \
    --kv-dtype bf16 --device cuda >/tmp/logits.log 2>&1 || { echo "logits $model failed"; tail -3 /tmp/logits.log; }
  python3 scripts/compare_logits.py /tmp/$model.safetensors $dir/reference_bf16w.safetensors --tol 8e-2 --top1 0.95
done
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2)
# shellcheck disable=SC2086  # $1 is several arguments
tg() { echo "$1, $2: $(timeout 60 env $2 $b/podkv "${a[@]}" $1 | grep tg | cut -d'|' -f6-12)"; }
for pass in 1 2; do for g in PODKV_NONE=0 PODKV_CUDA_GEMV_MMA_GROUP=4,0; do tg "-d 8192 -b 8" $g; done; done
for pass in 1 2; do for g in PODKV_NONE=0 PODKV_CUDA_SAMPLE_GREEDY=0; do tg "-d 4096" $g; done; done
echo "done ($SECONDS s)"
