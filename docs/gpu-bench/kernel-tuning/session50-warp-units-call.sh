#!/usr/bin/env bash
# The device call for session50-chain-warp-units-untested.patch with binaries built on the workstation
# (no build on the device): .data/binz51/bin.tgz (ignored, 10 MB: podkv and podkv_test_backend_ops,
# stripped, built from ec44cf4 + the patch; its PROVENANCE file says how). Copy this script to .data/run/
# and call from the repository root with carry [".data/binz51", ".data/run"] (docs/ and the long
# models' weights out of the index, as session48-calls.sh says):
#   OUT=$OUT bash .data/run/session50-warp-units-call.sh
# Where .data/binz51 is gone (a fresh checkout), build on the device instead:
#   OUT=$OUT PART=dyn PATCH=.data/run/session50-chain-warp-units-untested.patch LIMIT=560 \
#     TARGETS="podkv_cli podkv_tests podkv_test_backend_ops" bash .data/run/session48-calls.sh
# (its dyn part compares the default, now 2, with PODKV_CUDA_CHAIN_DYNAMIC=0; run 1 by hand beside it).
# Writes $OUT/summary.txt: the decode_chain op cases under each PODKV_CUDA_CHAIN_DYNAMIC (2 warp units,
# 1 block tasks, 0 fixed), two fixtures' logits one token per step (2 against 0: the same bytes), then
# batch-1 decode at 4K (three interleaved passes) and 32K (two), and batch 8 at 8K, 2 against 1.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
b=/tmp/b51
mkdir -p $b && tar xzf .data/binz51/bin.tgz -C $b || { echo "no .data/binz51/bin.tgz"; exit 1; }
cat $b/PROVENANCE
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for m in 2 1 0; do
  timeout 150 env PODKV_CUDA_CHAIN_DYNAMIC=$m OMP_WAIT_POLICY=PASSIVE $b/podkv_test_backend_ops --op decode_chain \
    --backend cuda >/tmp/op$m.log 2>&1
  echo "decode_chain, PODKV_CUDA_CHAIN_DYNAMIC=$m: rc $?, $(tail -1 /tmp/op$m.log)"; grep FAIL /tmp/op$m.log | head -5
done
for model in llama_gqa qwen2_bias; do
  dir=tests/fixtures/models/$model
  for m in 2 0; do
    timeout 60 env PODKV_CUDA_CHAIN_DYNAMIC=$m $b/podkv logits -m $dir --ids-file $dir/reference.safetensors --chunk 1 \
      --out /tmp/$model.$m.safetensors --kv-dtype bf16 --device cuda >/tmp/logits.log 2>&1 || { echo "logits $model $m failed"; tail -3 /tmp/logits.log; }
  done
  cmp /tmp/$model.2.safetensors /tmp/$model.0.safetensors && echo "$model: warp units and fixed tasks, the same logits bytes"
  python3 scripts/compare_logits.py /tmp/$model.2.safetensors $dir/reference_bf16w.safetensors --tol 8e-2 --top1 0.95
done
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2)
# shellcheck disable=SC2086  # $1 is several arguments
tg() { echo "$1, PODKV_CUDA_CHAIN_DYNAMIC=$2: $(timeout 60 env PODKV_CUDA_CHAIN_DYNAMIC="$2" $b/podkv "${a[@]}" $1 | grep tg)"; }
for pass in 1 2 3; do for m in 2 1; do tg "-d 4096" $m; done; done
for pass in 1 2; do for m in 2 1; do tg "-d 32735" $m; done; done
for m in 2 1; do tg "-d 8192 -b 8" $m; done
echo "done ($SECONDS s)"
