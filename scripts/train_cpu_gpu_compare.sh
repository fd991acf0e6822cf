#!/usr/bin/env bash
# The same tiny training run on the CPU and the GPU: configs/podkv-ref's shape
# (3.8M parameters), the same seed (initial weights and batch order) and data
# (DATA: default .data/gutenberg.tokens, the token file scripts/make_compare_tokens.sh
# makes, the same bytes every time, from ../shared), 100 steps of 8 x 128 tokens. Each VARIANT writes OUT_DIR/VARIANT.jsonl; with all three logs present
# the curves are overlaid in OUT_DIR/cpu_gpu_loss.png.
#   scripts/train_cpu_gpu_compare.sh BUILD_DIR OUT_DIR [VARIANT ...]   (cpu, cuda-f32, cuda-bf16; default all)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?build directory with podkv}
out=${2:?output directory}
shift 2
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(cpu cuda-f32 cuda-bf16)
data=${DATA:-$root/.data/gutenberg.tokens}
[ -f "$data" ] || { echo "no training data at $data: make it with scripts/make_compare_tokens.sh" >&2; exit 2; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for v in "${variants[@]}"; do
  case "$v" in
    cpu) device=(--device cpu) ;;
    cuda-f32) device=(--device cuda --precision f32) ;;
    cuda-bf16) device=(--device cuda --precision bf16) ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  "$build/podkv" train --config "$root/configs/podkv-ref/config.json" --tokenizer "$root/models/podkv-ref" \
    --data "$data" --steps 100 --batch 8 --seq-len 128 --lr 2e-3 --seed 7 --eval-every 25 \
    --eval-batches 2 "${device[@]}" --out "$work/$v" --log "$out/$v.jsonl" 2>"$work/$v.err" ||
    { cat "$work/$v.err"; exit 1; }
  tail -2 "$work/$v.err"
done
if [ -f "$out/cpu.jsonl" ] && [ -f "$out/cuda-f32.jsonl" ] && [ -f "$out/cuda-bf16.jsonl" ]; then
  "$build/podkv" plot-loss "$out/cpu.jsonl" "$out/cuda-f32.jsonl" "$out/cuda-bf16.jsonl" --label cpu \
    --label "cuda f32" --label "cuda bf16" --title "the same 100 steps on the CPU and the GPU" --out "$out/cpu_gpu_loss.png"
  python3 - "$out" <<'PY'
import json, sys
logs = {v: [json.loads(l) for l in open(f"{sys.argv[1]}/{v}.jsonl") if '"loss"' in l] for v in ("cpu", "cuda-f32", "cuda-bf16")}
for v in ("cuda-f32", "cuda-bf16"):
    d = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(logs[v], logs["cpu"]))
    print(f"{v}: {len(logs[v])} steps, max relative loss difference to the cpu {d:.2e}, "
          f"final loss {logs[v][-1]['loss']:.4f} (cpu {logs['cpu'][-1]['loss']:.4f})")
PY
fi
