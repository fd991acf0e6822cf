#!/usr/bin/env bash
# Session 51's device call for decode attention folding its chunks in thread-block clusters
# (attention_decode_fold.cuh, PODKV_CUDA_DECODE_CLUSTER) with binaries built on the workstation:
# .data/binz52/bin.tgz (ignored: podkv and podkv_test_backend_ops, stripped; PROVENANCE says from
# what). Copy this script to .data/run/, take docs/ and the long models' weights out of the index (as
# session48-calls.sh says), and call from the repository root with carry [".data/binz52", ".data/run"]:
#   OUT=$OUT bash .data/run/session51-fold-call.sh
# Writes $OUT/summary.txt: the attention op cases with the fold (the default) and without
# (PODKV_CUDA_DECODE_CLUSTER=0), two fixtures' logits one token per step both ways (against
# transformers with the same bf16 weights, and against each other), then decode at batch 1, 4K (three
# interleaved passes) and 32K (two), and batch 8 and 32 at 8K, fold against none.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
b=/tmp/b52
mkdir -p $b && tar xzf .data/binz52/bin.tgz -C $b || { echo "no .data/binz52/bin.tgz"; exit 1; }
cat $b/PROVENANCE
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for m in 1 0; do
  timeout 200 env PODKV_CUDA_DECODE_CLUSTER=$m OMP_WAIT_POLICY=PASSIVE $b/podkv_test_backend_ops --op attention \
    --backend cuda >/tmp/op$m.log 2>&1
  echo "attention, PODKV_CUDA_DECODE_CLUSTER=$m: rc $?, $(tail -1 /tmp/op$m.log)"; grep FAIL /tmp/op$m.log | head -5
done
timeout 200 env PODKV_CUDA_DECODE_SPLIT_KEYS=16 OMP_WAIT_POLICY=PASSIVE $b/podkv_test_backend_ops --op attention \
  --backend cuda >/tmp/op16.log 2>&1
echo "attention, SPLIT_KEYS=16 with the fold: rc $?, $(tail -1 /tmp/op16.log)"; grep FAIL /tmp/op16.log | head -5
for model in llama_gqa qwen2_bias; do
  dir=tests/fixtures/models/$model
  for m in 1 0; do
    timeout 60 env PODKV_CUDA_DECODE_CLUSTER=$m $b/podkv logits -m $dir --ids-file $dir/reference.safetensors --chunk 1 \
      --out /tmp/$model.$m.safetensors --kv-dtype bf16 --device cuda >/tmp/logits.log 2>&1 || { echo "logits $model $m failed"; tail -3 /tmp/logits.log; }
    python3 scripts/compare_logits.py /tmp/$model.$m.safetensors $dir/reference_bf16w.safetensors --tol 8e-2 --top1 0.95 | sed "s/^/  cluster=$m /"
  done
  cmp -s /tmp/$model.1.safetensors /tmp/$model.0.safetensors && echo "$model: the same logits bytes"
  python3 scripts/compare_logits.py /tmp/$model.1.safetensors /tmp/$model.0.safetensors --tol 5e-2 --top1 0.9 | sed "s/^/  fold vs merge: /"
done
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2)
# shellcheck disable=SC2086  # $1 is several arguments
tg() { echo "$1, PODKV_CUDA_DECODE_CLUSTER=$2: $(timeout 90 env PODKV_CUDA_DECODE_CLUSTER="$2" $b/podkv "${a[@]}" $1 | grep tg)"; }
for pass in 1 2 3; do for m in 1 0; do tg "-d 4096" $m; done; done
for pass in 1 2; do for m in 1 0; do tg "-d 32735" $m; done; done
for m in 1 0; do tg "-d 8192 -b 8" $m; done
for m in 1 0; do tg "-d 8192 -b 32" $m; done
echo "done ($SECONDS s)"
