#!/usr/bin/env bash
# The GPU benchmark (issue 12) on one NVIDIA GPU, everything in the same run:
# the Llama-3-8B shape (configs/llama-3-8b-32k, 8.03B parameters) with random
# bf16 weights made on the device, bf16 KV entries; the same run's device copy
# bandwidth and bf16 GEMM rate are the references (podkv bench prints them).
#  1. prefill at 4K and 32K (chunks of 8192, the default), decode at batch 1 at 4K and 32K, and a --profile
#     run of the 4K pair (GPU time by region);
#  2. decode at batch 8, 32, 64, 128 at 8K and 32K, dense and PoD (uniform
#     blocks of 3, sink 16, recent 4080) side by side under one --kv-memory
#     (a batch the budget cannot hold is reported as such);
#  3. the largest batch at 32K that --kv-memory really holds (sequences admitted
#     until the cache refuses), dense and PoD, and the throughput at that batch;
#  4. Hugging Face transformers (SDPA and eager) on the same shapes (scripts/bench_gpu_peer.py);
#  5. (not in the default parts) prefill attention alone: podkv's --profile of a 32K prompt (its
#     attention region) and PyTorch's SDPA kernels on one layer's 32K causal prompt.
# Decode contexts are filled without a prefill (podkv bench's synthetic depth on
# the GPU); transformers runs its real prefill first.
#   scripts/bench_gpu.sh [BUILD_DIR] [OUT_DIR]    (KV_MEMORY=96G, STEPS=32, PARTS="1 2 3 4")
# KV_MEMORY unset on a GPU too small for 96 GiB of cache beside the 16 GB of weights (an 80 GB H100):
# the card's memory less 24 GiB, rounded down to a multiple of 8 GiB (48G on an H100), said in a line.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-cuda}
out=${2:-$build/gpu-bench}
mkdir -p "$out"
podkv="$build/podkv"
config="$root/configs/llama-3-8b-32k"
mem=${KV_MEMORY:-}
if [ -z "$mem" ]; then
  mem=96G
  total_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0 2>/dev/null | head -1 | tr -dc 0-9)
  if [ -n "$total_mib" ] && [ $((total_mib / 1024 - 24)) -lt 96 ]; then
    mem=$(( (total_mib / 1024 - 24) / 8 * 8 ))G
    echo "bench_gpu: KV_MEMORY=$mem (this GPU has $((total_mib / 1024)) GiB: 96G of cache does not fit beside the weights)"
  fi
fi
steps=${STEPS:-32}
pod=(--kv pod --pod-group 3 --sink 16 --recent 4080)
common=(-m "$config" --device cuda --random-weights --kv-dtype bf16 --page-tokens 64)
parts=${PARTS:-1 2 3 4}
status=0
want() { [[ " $parts " == *" $1 "* ]]; }

# The config's context is 32768: decode at 32K starts at depth 32768 - steps - 1.
d32k=$((32768 - steps - 1))
want 1 && { echo "== 1. prefill 4K and 32K, decode batch 1 at 4K and 32K"
"$podkv" bench "${common[@]}" -p 4096,32768 -n "$steps" -d 4096,$d32k -r 3 | tee "$out/batch1.md" || status=1
echo "-- the same at 4K with --profile (GPU time by region; profiling times each region with events, so its"
echo "   decode runs launch by launch, without the step graph the table's decode replays)"
"$podkv" bench "${common[@]}" -p 4096 -n 16 -d 4096 -r 1 --profile | grep -A3 "GPU time" | tee "$out/batch1_profile.md" ||
  status=1; }
want 2 && { echo "== 2. decode batches at 8K and 32K, dense vs PoD, --kv-memory $mem"
"$podkv" bench "${common[@]}" "${pod[@]}" -p 0 -n 16 -d 8192,$((32768 - 17)) -b 8,32,64,128 -r 2 --kv-memory "$mem" |
  tee "$out/batches.md" || status=1; }
want 3 && { echo "== 3. largest batch at 32K in --kv-memory $mem"
"$podkv" bench "${common[@]}" "${pod[@]}" -p 0 -n 16 -d $((32768 - 17)) -b 0 -r 2 --kv-memory "$mem" | tee "$out/max_batch.md" ||
  status=1; }
want 4 && { echo "== 4. transformers on the same shapes"
PYTHONUNBUFFERED=1 python3 "$root/scripts/bench_gpu_peer.py" -m "$config" --out "$out/transformers.json" \
  --prefill 4096,32768 --decode 4096:1,$d32k:1,8192:8 --steps "$steps" || status=1; }
want 5 && { echo "== 5. prefill attention alone at 32K: podkv's attention region, PyTorch's SDPA kernels"
"$podkv" bench "${common[@]}" -p 32768 -n 0 -r 1 --profile | grep -A1 "GPU time" | tee "$out/attention_profile.md" || status=1
PYTHONUNBUFFERED=1 python3 "$root/scripts/bench_gpu_peer.py" -m "$config" --out "$out/sdpa_attention.json" \
  --attention 32768 || status=1; }
echo "bench_gpu: $([ $status -eq 0 ] && echo done || echo FAILURES)"
exit $status
