#!/usr/bin/env bash
# podkv against PyTorch in the same run on one GPU: the same model
# (configs/podkv-long-23m, 23.7M parameters), the same initial weights, the
# same batches and the same optimiser settings for STEPS steps:
#   1. scripts/train_torch_compare.py init: random LlamaForCausalLM weights (seed SEED), float32;
#   2. podkv train --init those weights --device cuda --precision bf16, writing every
#      micro-batch it draws (--dump-batches); then the same with --precision f32 (the scale
#      of precision noise: the summary compares the two podkv runs too);
#   3. scripts/train_torch_compare.py train: replays the batches through transformers'
#      Llama (SDPA, bf16 autocast, float32 master weights, AdamW with podkv's schedule,
#      clipping and decay);
#   4. both loss curves in OUT/torch_compare.png (podkv plot-loss) and a summary in
#      OUT/summary.txt (losses at steps 1, 10, 50, 100, 200, their relative difference
#      over the last 100 steps, tokens/s of both over the steps after the first).
# DATA: a podkv token file (scripts/make_compare_tokens.sh .data/gutenberg.tokens),
# or text files; default .data/gutenberg.tokens.
#   scripts/train_torch_compare.sh BUILD_DIR OUT_DIR [STEPS] [SEQ] [BATCH] [DATA]
#   (env: LR, MIN_LR, WARMUP, WEIGHT_DECAY, BETA1, BETA2, CLIP, SEED, CONFIG_DIR, TOKENIZER, PYTHON;
#    DEVICE=cpu runs podkv's side on the CPU, a check of the plumbing)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?build directory with podkv (built with -DPODKV_CUDA=ON)}
out=${2:?output directory}
steps=${3:-200}
seq=${4:-1024}
batch=${5:-16}
data=${6:-${DATA:-$root/.data/gutenberg.tokens}}
python=${PYTHON:-python3}
config_dir=${CONFIG_DIR:-$root/configs/podkv-long-23m}
tokenizer=${TOKENIZER:-$root/models/podkv-ref}
seed=${SEED:-1}
device=${DEVICE:-cuda}
# The same optimiser settings, given explicitly to both sides.
hyper=(--lr "${LR:-1e-3}" --min-lr "${MIN_LR:-1e-4}" --warmup "${WARMUP:-20}" --weight-decay "${WEIGHT_DECAY:-0.1}"
       --beta1 "${BETA1:-0.9}" --beta2 "${BETA2:-0.95}" --clip "${CLIP:-1.0}")
[ -f "$data" ] || { echo "no training data at $data: make it with scripts/make_compare_tokens.sh" >&2; exit 2; }
mkdir -p "$out"
rm -rf "$out/init" "$out/podkv"

"$python" "$root/scripts/train_torch_compare.py" init "$config_dir" "$out/init" --seed "$seed"
echo "podkv: $steps steps of $batch x $seq tokens" >&2
"$build/podkv" train --init "$out/init" --tokenizer "$tokenizer" --data "$data" --steps "$steps" --batch "$batch" \
  --seq-len "$seq" "${hyper[@]}" --seed "$seed" --device "$device" --precision bf16 --eval-batches 1 \
  --dump-batches "$out/batches.bin" --log "$out/podkv.jsonl" --out "$out/podkv" 2>"$out/podkv.err" ||
  { cat "$out/podkv.err" >&2; exit 1; }
tail -2 "$out/podkv.err" >&2
# The noise scale: the same run with float32 products (podkv's exact attention), same weights and batches.
echo "podkv f32: the same steps with float32 products (the scale of precision noise)" >&2
"$build/podkv" train --init "$out/init" --tokenizer "$tokenizer" --data "$data" --steps "$steps" --batch "$batch" \
  --seq-len "$seq" "${hyper[@]}" --seed "$seed" --device "$device" --precision f32 --eval-batches 1 \
  --log "$out/podkv_f32.jsonl" --out "$out/podkv_f32" 2>"$out/podkv_f32.err" ||
  { cat "$out/podkv_f32.err" >&2; exit 1; }
echo "PyTorch: replaying $out/batches.bin" >&2
"$python" "$root/scripts/train_torch_compare.py" train "$out/init" "$out/batches.bin" --steps "$steps" "${hyper[@]}" \
  --log "$out/torch.jsonl" | tail -1 >"$out/torch_final.json"
"$build/podkv" plot-loss "$out/podkv.jsonl" "$out/torch.jsonl" --label podkv --label PyTorch \
  --title "podkv and PyTorch: the same weights and batches, $batch x $seq tokens per step" \
  --out "$out/torch_compare.png" || echo "(no picture: this podkv was built without Cairo; plot the logs elsewhere)" >&2

"$python" - "$out" "$((batch * seq))" <<'PY' | tee "$out/summary.txt"
import json, sys
out, tokens_per_step = sys.argv[1], int(sys.argv[2])
def steps(path):
    return {r["step"]: r for r in map(json.loads, open(path)) if "loss" in r}
podkv, torch, f32 = steps(f"{out}/podkv.jsonl"), steps(f"{out}/torch.jsonl"), steps(f"{out}/podkv_f32.jsonl")
n = min(max(podkv), max(torch))
def tokens_per_s(log):  # over the steps after the first, from the logged elapsed time
    return tokens_per_step * (n - 1) / (log[n]["elapsed_s"] - log[1]["elapsed_s"]) if n > 1 else float("nan")
print(f"{n} steps of {tokens_per_step} tokens, the same initial weights and batches")
print("| step | podkv loss | PyTorch loss | relative difference |")
print("| ---: | ---: | ---: | ---: |")
for s in (1, 10, 50, 100, 200):
    if s <= n:
        p, t = podkv[s]["loss"], torch[s]["loss"]
        print(f"| {s} | {p:.4f} | {t:.4f} | {(p - t) / t:+.2%} |")
last = range(max(1, n - 99), n + 1)
rel = [(podkv[s]["loss"] - torch[s]["loss"]) / torch[s]["loss"] for s in last]
print(f"steps {last[0]}-{last[-1]}: mean |relative difference| {sum(map(abs, rel)) / len(rel):.2%}, "
      f"max {max(map(abs, rel)):.2%}, mean signed (podkv - PyTorch) {sum(rel) / len(rel):+.2%}")
noise = [(podkv[s]["loss"] - f32[s]["loss"]) / f32[s]["loss"] for s in last]
print(f"noise scale, podkv bf16 against podkv f32 products over the same steps: mean |relative difference| "
      f"{sum(map(abs, noise)) / len(noise):.2%}, max {max(map(abs, noise)):.2%}")
tp, tt = tokens_per_s(podkv), tokens_per_s(torch)
print(f"tokens/s (steps 2-{n}): podkv {tp:,.0f}, PyTorch {tt:,.0f}, podkv / PyTorch {tp / tt:.2f}")
PY
