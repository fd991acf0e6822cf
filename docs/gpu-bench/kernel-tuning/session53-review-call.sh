#!/usr/bin/env bash
# Session 53's review: gather_rows_kernel copies its rows through the embedding's copy_row (one loop
# for both kernels) on binaries built on the workstation (.data/binz62): the embedding and gather_rows op
# cases and every op on cuda against the CPU, the CUDA gtests of the forward (prompt steps gather their
# last rows), two fixtures' logits against transformers in prompt steps of 4 rows, batch-1 decode at 4K.
# Carry [".data/binz62", ".data/run"]:   OUT=$OUT bash .data/run/session53-review-call.sh
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
b=/tmp/b62; mkdir -p $b && tar xzf .data/binz62/bin.tgz -C $b || { echo "no .data/binz62/bin.tgz"; exit 1; }
cat $b/PROVENANCE
[ "$root" = /work/main ] || [ -e /work/main ] || { mkdir -p /work && ln -s "$root" /work/main && echo "linked /work/main -> $root"; }
timeout 120 env OMP_WAIT_POLICY=PASSIVE $b/podkv_test_backend_ops --backend cuda >"$out/ops.txt" 2>&1
echo "every op, cuda: rc $?, $(tail -1 "$out/ops.txt")"; grep -E "embedding|gather_rows|FAIL" "$out/ops.txt" | head -8
timeout 150 $b/podkv_tests --gtest_filter='Models/CudaFixture.*:CudaPromptPath.*:CudaGraphs.*:CudaSampling.*:CudaFusedOps.*' >"$out/gtests.txt" 2>&1
echo "gtests rc $? ($SECONDS s): $(grep -E '^\[  (PASSED|FAILED)' "$out/gtests.txt" | tr '\n' ' ')"
grep -E "^\[  FAILED|SKIPPED \]" "$out/gtests.txt" | head -10
for model in llama_gqa qwen2_bias; do
  dir=tests/fixtures/models/$model
  timeout 60 $b/podkv logits -m $dir --ids-file $dir/reference.safetensors --chunk 4 --out /tmp/$model.safetensors \
    --kv-dtype bf16 --device cuda >/tmp/logits.log 2>&1 || { echo "logits $model failed"; tail -3 /tmp/logits.log; }
  python3 scripts/compare_logits.py /tmp/$model.safetensors $dir/reference_bf16w.safetensors --tol 8e-2 --top1 0.95
done
echo "tg @ 4K: $(timeout 60 $b/podkv bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2 -d 4096 | grep tg | cut -d'|' -f6-12)"
echo "done ($SECONDS s)"
