#!/usr/bin/env bash
# For a next device call (written in session 51, not run): session51-split-sum-fusion-untested.patch,
# the 2-to-8-row GEMV's split sums added by their consumers (SwiGLU's product, the residual add + norm)
# instead of a sum launch of their own: three launches less a layer (o's, gate | up's, down's) at batches of 2 to 8 rows, the same
# bits (PODKV_CUDA_SPLIT_SUM_FUSE=0: the separate sums). Nsight Compute in session 51 (call 5) put the
# sum launches at 3.2-3.6 us each, four a layer, 0.43 ms of a 12.9 ms batch-8 step at 8K before the
# GEMV change. Note: the patch restructures rms_norm_vec4_kernel around a residual policy, so that
# kernel's PTX changes too (the same arithmetic). Binaries built on the workstation from the tree +
# the patch: .data/binz57/bin.tgz (podkv, podkv_tests; PROVENANCE). Carry [".data/binz57", ".data/run"]:
#   OUT=$OUT bash .data/run/session51-split-sum-fusion-call.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
b=/tmp/b57
mkdir -p $b && tar xzf .data/binz57/bin.tgz -C $b || { echo "no .data/binz57/bin.tgz"; exit 1; }
cat $b/PROVENANCE
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# The fixture models against transformers and the CPU (every batch shape, the graphs), fused and not.
for f in 1 0; do
  timeout 200 env PODKV_CUDA_SPLIT_SUM_FUSE=$f $b/podkv_tests --gtest_filter='Models/CudaFixture.*:CudaGraphs.*' >/tmp/gt.log 2>&1
  echo "gtests, fuse $f: rc $?, $(grep -E '^\[  (PASSED|FAILED)' /tmp/gt.log | tr '\n' ' ')"; grep -E "^\[  FAILED" /tmp/gt.log | head
done
# Prompt steps of 4 rows through the fused consumers: the same logits bytes both ways.
for model in llama_gqa qwen2_bias llama_mqa_tied; do
  dir=tests/fixtures/models/$model
  [ -d "$dir" ] || continue
  for f in 1 0; do
    timeout 60 env PODKV_CUDA_SPLIT_SUM_FUSE=$f $b/podkv logits -m $dir --ids-file $dir/reference.safetensors --chunk 4 \
      --out /tmp/$model.$f.safetensors --kv-dtype bf16 --device cuda >/tmp/logits.log 2>&1 || { echo "logits $model $f failed"; tail -3 /tmp/logits.log; }
  done
  cmp -s /tmp/$model.1.safetensors /tmp/$model.0.safetensors && echo "$model: fused and separate sums, the same logits bytes" ||
    echo "$model: DIFFERENT logits bytes"
done
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2)
# shellcheck disable=SC2086  # $1 is several arguments
tg() { echo "$1, fuse $2: $(timeout 90 env PODKV_CUDA_SPLIT_SUM_FUSE="$2" $b/podkv "${a[@]}" $1 | grep tg | cut -d'|' -f7-11)"; }
for pass in 1 2; do for s in "-d 8192 -b 2" "-d 8192 -b 4" "-d 8192 -b 8"; do for f in 1 0; do tg "$s" $f; done; done; done
echo "done ($SECONDS s)"
