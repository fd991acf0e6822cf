#!/usr/bin/env bash
# Training throughput on one GPU, podkv against PyTorch in the same run, on the
# shape of configs/podkv-long-23m (23.7M parameters: hidden 512, 8 layers,
# 8 heads, 4 KV heads, FFN 1376, 1007-token vocabulary, tied embeddings) at
# SEQ tokens x BATCH sequences per step (default 4096 x 16):
#   podkv train --device cuda --precision bf16 (dense, dense with --recompute, and PoD
#   blocks of 2), PyTorch eager with SDPA, and torch.compile (scripts/train_torch_ref.py).
# Tokens/s are the median step of the timed steps (the first steps are warm-up);
# model TFLOP/s count 6 x matrix parameters + 6 x layers x heads x head_dim x seq per token;
# GPU memory is the peak of nvidia-smi's memory.used sampled every 100 ms during the run.
#   scripts/bench_train_gpu.sh BUILD_DIR [SEQ] [BATCH] [STEPS]      (TORCH_COMPILE=0: without torch.compile)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?build directory with podkv}
seq=${2:-4096}
batch=${3:-16}
steps=${4:-12}
python=${PYTHON:-python3}
config="$root/configs/podkv-long-23m/config.json"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

median_json() {  # LOG: median tokens_per_s and model_tflops of the steps after the first 3
  $python - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l][3:]
print(json.dumps({"tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
                  "model_tflops": statistics.median(r["model_tflops"] for r in rows)}))
PY
}

# Runs "$@" while sampling the GPU's used memory; the peak in GiB goes to $work/peak.
with_peak_memory() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$work/mem.log" 2>/dev/null &
  local sampler=$! rc=0
  "$@" || rc=$?
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  awk 'BEGIN { m = 0 } $1 + 0 > m { m = $1 + 0 } END { printf "%.1f", m / 1024 }' "$work/mem.log" >"$work/peak"
  return $rc
}

echo "| implementation | seq | batch | tokens/s | model TFLOP/s | GPU memory GiB | vs torch SDPA |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
declare -A tps mem
for variant in dense recompute pod; do
  if [ "$variant" = recompute ]; then
    with_peak_memory "$build/podkv" train --config "$config" --tokenizer "$root/models/podkv-ref" --synthetic passkey \
      --synthetic-fraction 1 --steps "$steps" --batch "$batch" --seq-len "$seq" --device cuda --eval-batches 1 \
      --accuracy-samples 1 --recompute --out "$work/recompute" 2>"$work/recompute.err" || { cat "$work/recompute.err"; exit 1; }
  elif [ "$variant" = pod ]; then
    # adapt needs a model directory: the dense run's checkpoint.
    with_peak_memory "$build/podkv" adapt -m "$work/dense" --pod-group 2 --sink 16 --recent 1024 --synthetic passkey \
      --synthetic-fraction 1 --steps "$steps" --batch "$batch" --seq-len "$seq" --device cuda --eval-batches 1 \
      --accuracy-samples 1 --out "$work/pod" >/dev/null 2>"$work/pod.err" || { cat "$work/pod.err"; exit 1; }
  else
    with_peak_memory "$build/podkv" train --config "$config" --tokenizer "$root/models/podkv-ref" --synthetic passkey \
      --synthetic-fraction 1 --steps "$steps" --batch "$batch" --seq-len "$seq" --device cuda --eval-batches 1 \
      --accuracy-samples 1 --out "$work/dense" 2>"$work/dense.err" || { cat "$work/dense.err"; exit 1; }
  fi
  tps[$variant]=$(median_json "$work/$variant/train_log.jsonl")
  mem[$variant]=$(cat "$work/peak")
done
with_peak_memory $python "$root/scripts/train_torch_ref.py" "$root/configs/podkv-long-23m" --batch "$batch" --seq "$seq" --steps 8 >"$work/sdpa.out"
torch_sdpa=$(tail -1 "$work/sdpa.out")
mem[sdpa]=$(cat "$work/peak")
torch_compile='{}'
mem[compile]=0
if [ "${TORCH_COMPILE:-1}" = 1 ]; then  # TORCH_COMPILE=0 skips it (its compilation takes about a minute)
  if with_peak_memory $python "$root/scripts/train_torch_ref.py" "$root/configs/podkv-long-23m" --batch "$batch" --seq "$seq" --steps 8 --compile >"$work/compile.out" 2>/dev/null; then
    torch_compile=$(tail -1 "$work/compile.out")
    mem[compile]=$(cat "$work/peak")
  fi
fi
$python - "$seq" "$batch" "${tps[dense]}" "${tps[recompute]}" "${tps[pod]}" "$torch_sdpa" "$torch_compile" \
  "${mem[dense]} ${mem[recompute]} ${mem[pod]} ${mem[sdpa]} ${mem[compile]}" <<'PY'
import json, sys
seq, batch = sys.argv[1], sys.argv[2]
names = ["podkv cuda bf16, dense", "podkv cuda bf16, dense, --recompute", "podkv cuda bf16, PoD blocks of 2",
         "PyTorch eager + SDPA (bf16 autocast)", "torch.compile"]
rows = [json.loads(a or "{}") for a in sys.argv[3:8]]  # {} when skipped or failed
mem = sys.argv[8].split()
ref = rows[3]["tokens_per_s"]
for name, r, m in zip(names, rows, mem):
    if not r:
        print(f"| {name} | {seq} | {batch} | did not run | | | |")
        continue
    print(f"| {name} | {seq} | {batch} | {r['tokens_per_s']:,.0f} | {r['model_tflops']:.1f} | {m} | {r['tokens_per_s'] / ref:.2f} |")
PY
