#!/usr/bin/env bash
# Session 51: the 2..8-row tensor-core GEMV with U chunks per lane in flight (PODKV_CUDA_GEMV_MMA_GROUP:
# 0 the kernel before, 2, 4, 8; splits for one wave of the resident warps). Binaries built on the
# workstation: .data/binz54/bin.tgz (podkv, podkv_test_backend_ops; from 54bd058 + the change with
# the kernel before kept as group 0, which the landed tree no longer has). Carry [".data/binz54", ".data/run"]:
#   OUT=$OUT bash .data/run/session51-gemv-group-call.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
b=/tmp/b54
mkdir -p $b && tar xzf .data/binz54/bin.tgz -C $b || { echo "no .data/binz54/bin.tgz"; exit 1; }
cat $b/PROVENANCE
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for g in 0 2 4 8; do
  timeout 120 env PODKV_CUDA_GEMV_MMA_GROUP=$g OMP_WAIT_POLICY=PASSIVE $b/podkv_test_backend_ops --op matmul --backend cuda >/tmp/op$g.log 2>&1
  echo "matmul, group $g: rc $?, $(tail -1 /tmp/op$g.log)"; grep FAIL /tmp/op$g.log | head -5
done
for model in llama_gqa qwen2_bias; do
  dir=tests/fixtures/models/$model
  for g in 0 4; do
    timeout 60 env PODKV_CUDA_GEMV_MMA_GROUP=$g $b/podkv logits -m $dir --ids-file $dir/reference.safetensors --chunk 4 \
      --out /tmp/$model.$g.safetensors --kv-dtype bf16 --device cuda >/tmp/logits.log 2>&1 || { echo "logits $model $g failed"; tail -3 /tmp/logits.log; }
  done
  cmp -s /tmp/$model.4.safetensors /tmp/$model.0.safetensors && echo "$model (chunks of 4 rows): group 4 and the kernel before, the same logits bytes"
  python3 scripts/compare_logits.py /tmp/$model.4.safetensors $dir/reference_bf16w.safetensors --tol 8e-2 --top1 0.95
done
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 -p 0 -n 32 -r 2)
# shellcheck disable=SC2086  # $1 is several arguments
tg() { echo "$1, group $2: $(timeout 90 env PODKV_CUDA_GEMV_MMA_GROUP="$2" $b/podkv "${a[@]}" $1 | grep tg | cut -d'|' -f7-11)"; }
for pass in 1 2; do for g in 0 2 4 8; do tg "-d 8192 -b 8" $g; done; done
for s in "-d 8192 -b 2" "-d 8192 -b 4" "-d 32735 -b 8"; do for g in 0 4; do tg "$s" $g; done; done
echo "done ($SECONDS s)"
