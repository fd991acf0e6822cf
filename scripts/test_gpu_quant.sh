#!/usr/bin/env bash
# Quantized GGUF files on the CUDA backend against the CPU (scripts/test_gpu.sh's step 10; runs alone
# too): models/podkv-ref converted by `podkv convert` to every --type that writes a block type, then
# podkv logits of 64 fixed token ids on each device. The CUDA backend dequantizes every block type to
# its upload type at load (CudaBackend, through to_f32), so:
#  - --cuda-weights f32 with an f32 cache against the CPU's --exact-quant (f32 dequantized weights):
#    within 1e-4 relative (the gate);
#  - the default bf16 weights and cache against the same: reported (error and top-1 agreement).
#   scripts/test_gpu_quant.sh BUILD_DIR LOG_DIR
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-cuda}
logs=${2:-$build/gpu-logs}/quant
mkdir -p "$logs"
podkv=$build/podkv
python=${PYTHON:-python3}
# 64 token ids of the reference model's vocabulary (1007), spread over it.
ids=$(seq 0 63 | awk '{printf "%s%d", (NR > 1 ? "," : ""), ($1 * 397 + 11) % 1007}')
status=0
for type in q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k_m q4_k_m q5_k_m q6_k iq4_nl iq4_xs; do
  file=$logs/ref-$type.gguf
  "$podkv" convert -m "$root/models/podkv-ref" --out "$file" --type $type --check-tokens 0 >"$logs/$type.convert.log" 2>&1 ||
    { echo " $type: convert failed  FAIL"; tail -2 "$logs/$type.convert.log"; status=1; continue; }
  "$podkv" logits -m "$file" --ids $ids --out "$logs/$type.cpu.safetensors" --kv-dtype f32 --device cpu --exact-quant \
    2>>"$logs/errors.log" || status=1
  "$podkv" logits -m "$file" --ids $ids --out "$logs/$type.cuda_f32.safetensors" --kv-dtype f32 --device cuda \
    --cuda-weights f32 2>>"$logs/errors.log" || status=1
  "$podkv" logits -m "$file" --ids $ids --out "$logs/$type.cuda_bf16.safetensors" --device cuda 2>>"$logs/errors.log" || status=1
  echo " $type: cuda f32 weights and cache against cpu --exact-quant, then cuda bf16 (reported):"
  $python "$root/scripts/compare_logits.py" "$logs/$type.cuda_f32.safetensors" "$logs/$type.cpu.safetensors" --tol 1e-4 ||
    status=1
  $python "$root/scripts/compare_logits.py" "$logs/$type.cuda_bf16.safetensors" "$logs/$type.cpu.safetensors" --tol 1 \
    --top1 0 || true
done
[ -s "$logs/errors.log" ] && tail -5 "$logs/errors.log"
exit $status
