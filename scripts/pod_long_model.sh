#!/usr/bin/env bash
# The PoD form of the long-context model trained by scripts/train_long_model.sh,
# and the two directories shipped in models/:
#   1. podkv analyze on the trained model (TRAINED, a model directory; default the
#      last stage in OUT_DIR), calibration
#      text CALIB [.data/calib.txt: the first 300 KB of a training book, The
#      Secret Adversary], SAMPLES [16] sequences of ANALYZE_SEQ [2048] tokens, the
#      last 32 queries of each, sink 16 and recent RECENT [256] tokens, blocks of
#      at most MAX_BLOCK [0: no cap] layers, for each delta in
#      DELTAS ["0.5 0.4 0.3 0.2 0.1"]. The similarity is measured once
#      (the runs share --state); OUT_DIR/pod/delta-D.json each. The chosen delta
#      is the largest whose expected KV saving at the full context is at least
#      MIN_SAVING [0.25, the saving docs/long-model must show] (the smallest delta
#      when none reaches it):
#      OUT_DIR/pod/choice.txt says which and why, OUT_DIR/pod.json is it.
#      POD_CONFIG (a pod.json) skips the analysis and adapts with that grouping.
#   2. podkv adapt --device ADAPT_DEVICE [cuda] with that pod.json, from the trained model:
#      ADAPT_STEPS [400] steps of 15 x 4160 tokens, lr ADAPT_LR [2e-4] to a tenth
#      in a cosine after 40 warmup steps, the training data and synthetic mix of
#      train_long_model.sh (half passkey-eval, kv and niah sequences; ADAPT_SYNTHETIC_MIN_LEN
#      [0] > 0: samples of every length from that many tokens, --synthetic-min-len),
#      evaluated every ADAPT_EVAL_EVERY [100] steps with ADAPT_ACCURACY_SAMPLES [64]
#      teacher-forced samples per task.
#   3. OUT_DIR/podkv-long and OUT_DIR/podkv-long-pod: bf16 copies of the trained
#      and the adapted model (scripts/to_bf16.py), the chosen pod.json beside each.
#   4. CHECK_SAMPLES [0: skipped] > 0: podkv eval --device ADAPT_DEVICE of the passkey
#      and needle grids (CHECK_LENGTHS [1040,2080,4096] x depths 0-100% in steps
#      of 10, CHECK_SAMPLES prompts per cell) for dense, PoD on the trained model
#      and PoD on the adapted one: OUT_DIR/check/TASK.md and TASK/results.json.
# Every command goes to OUT_DIR/pod_commands.sh.
#
#   scripts/pod_long_model.sh BUILD_DIR OUT_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: pod_long_model.sh BUILD_DIR OUT_DIR}
out=${2:?usage: pod_long_model.sh BUILD_DIR OUT_DIR}
podkv=$build/podkv
data=${DATA_DIR:-$root/.data/long}
calib=${CALIB:-$root/.data/calib.txt}
python=${PYTHON:-python3}
threads=${THREADS:-$(nproc)}
read -r -a deltas <<<"${DELTAS:-0.5 0.4 0.3 0.2 0.1}"
trained=${TRAINED:-}
if [ -z "$trained" ]; then  # the stage directory with the highest stage number
  for dir in "$out"/stage*-seq*; do
    [ -f "$dir/model.safetensors" ] || continue
    name=${dir##*/}
    k=${name%%-*}
    [ -z "$trained" ] || [ "${k#stage}" -gt "$best" ] || continue
    trained=$dir best=${k#stage}
  done
fi
[ -n "$trained" ] || { echo "no trained model in $out (run scripts/train_long_model.sh first)" >&2; exit 2; }
[ -f "$calib" ] || { echo "no calibration text $calib" >&2; exit 2; }
case ${trained##*/} in  # a stage's sequence length is in its name; another model's is its context
  stage*-seq*) seq=${trained##*seq} ;;
  *) seq=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["max_position_embeddings"])' "$trained/config.json") ;;
esac
batch=$((${BATCH_TOKENS:-65536} / seq))
mkdir -p "$out"
commands=$out/pod_commands.sh
echo "# scripts/pod_long_model.sh $build $out ($(date -u +%FT%TZ)); trained model $trained" >"$commands"
run() { printf '%q ' "$@" >>"$commands"; echo >>"$commands"; "$@"; }

# ---- 1. analyze, one similarity measurement, several deltas (or POD_CONFIG as it is)
mkdir -p "$out/pod"
if [ -n "${POD_CONFIG:-}" ]; then
  cp "$POD_CONFIG" "$out/pod.json"
  echo "chosen: $POD_CONFIG (POD_CONFIG, not analysed here)" >"$out/pod/choice.txt"
else
  for d in "${deltas[@]}"; do
    run "$podkv" analyze -m "$trained" --calib "$calib" --samples "${SAMPLES:-16}" --seq-len "${ANALYZE_SEQ:-2048}" \
      --last-queries 32 --sink 16 --recent "${RECENT:-256}" --delta "$d" --max-block "${MAX_BLOCK:-0}" --out "$out/pod/delta-$d.json" \
      --state "$out/pod/state.json" --similarity "$out/pod/similarity.json" --no-png -t "$threads" --json \
      >"$out/pod/delta-$d.summary.json"
  done
  "$python" - "$out" "${MIN_SAVING:-0.25}" "${deltas[@]}" <<'PY'
import json, shutil, sys
out, floor, deltas = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
rows = [(d, json.load(open(f"{out}/pod/delta-{d}.summary.json"))) for d in deltas]
lines = [f"delta {d}: expected KV saving {s['kv_saving']:.3f} at {s['context']} tokens, "
         f"average block {s['average_block_length']:.2f} layers, anchors {s['anchors']}" for d, s in rows]
ok = [(float(d), d) for d, s in rows if s["kv_saving"] >= floor]
chosen = max(ok)[1] if ok else min((float(d), d) for d, _ in rows)[1]
why = (f"the largest delta whose expected saving is at least {floor}" if ok else
       f"no delta reaches a saving of {floor}: the smallest one tried")
text = "\n".join(lines) + f"\nchosen: delta {chosen} ({why})\n"
open(f"{out}/pod/choice.txt", "w").write(text)
shutil.copyfile(f"{out}/pod/delta-{chosen}.json", f"{out}/pod.json")
print(text, end="", file=sys.stderr)
PY
fi

# ---- 2. adapt on the GPU with that grouping
header_tokens() { od -An -t u8 -j 32 -N 8 "$1" | tr -d ' '; }
val_fraction=$(awk -v h="$(header_tokens "$data/heldout.tokens")" -v t="$(header_tokens "$data/train.tokens")" \
  'BEGIN { printf "%.12g", (h + 0.5) / (h + t) }')
lr=${ADAPT_LR:-2e-4}
min_len=()  # ADAPT_SYNTHETIC_MIN_LEN: synthetic samples of every length from this many tokens up
[ "${ADAPT_SYNTHETIC_MIN_LEN:-0}" = 0 ] || min_len=(--synthetic-min-len "$ADAPT_SYNTHETIC_MIN_LEN")
rm -rf "$out/adapt"
run "$podkv" adapt -m "$trained" --pod-config "$out/pod.json" \
  --data "$data/train.tokens" "$data/heldout.tokens" --val-fraction "$val_fraction" \
  --seq-len "$seq" --batch "$batch" --steps "${ADAPT_STEPS:-400}" --lr "$lr" \
  --min-lr "$(awk -v l="$lr" 'BEGIN { printf "%g", l / 10 }')" --warmup 40 \
  --synthetic passkey-eval,kv,niah --synthetic-fraction 0.5 "${min_len[@]}" --eval-every "${ADAPT_EVAL_EVERY:-100}" \
  --accuracy-samples "${ADAPT_ACCURACY_SAMPLES:-64}" \
  --device "${ADAPT_DEVICE:-cuda}" --precision bf16 --peak-tflops 790 -t "$threads" --out "$out/adapt" 2>&1 | tee "$out/adapt.txt"

# ---- 3. the shipped directories, in bf16: config.json (torch_dtype bfloat16),
# tokenizer.json, pod.json and the weights rounded to nearest even (scripts/to_bf16.py)
bf16_copy() {
  rm -rf "$2"
  mkdir -p "$2"
  sed 's/"torch_dtype": *"float32"/"torch_dtype": "bfloat16"/' "$1/config.json" >"$2/config.json"
  cp "$1/tokenizer.json" "$out/pod.json" "$2/"
  run "$python" "$root/scripts/to_bf16.py" "$1/model.safetensors" "$2/model.safetensors"
}
bf16_copy "$trained" "$out/podkv-long"
bf16_copy "$out/adapt" "$out/podkv-long-pod"

# ---- 4. a quick check on the adapting device: retrieval grids, dense against PoD
[ "${CHECK_SAMPLES:-0}" -gt 0 ] || exit 0
mkdir -p "$out/check"
for task in passkey niah; do
  haystack=()
  [ "$task" = niah ] && haystack=(--data "$data/heldout.txt")
  rm -rf "$out/check/$task"
  run "$podkv" eval -m "$out/podkv-long" --task "$task" "${haystack[@]}" \
    --kv "dense,pod:name=pod-analysed,pod:model=$out/podkv-long-pod:name=pod-adapted" \
    --lengths "${CHECK_LENGTHS:-1040,2080,4096}" --depths 0,10,20,30,40,50,60,70,80,90,100 \
    --samples "$CHECK_SAMPLES" --seed 0 --device "${ADAPT_DEVICE:-cuda}" -t "$threads" --no-progress \
    --out "$out/check/$task" >"$out/check/$task.md"
done
