#!/usr/bin/env bash
# Trains the long-context reference model on one GPU with podkv train: the
# 23.7M-parameter shape of configs/podkv-long (configs/podkv-long-23m with a 4160-token context; 8 layers, hidden 512, 8 heads,
# 4 KV heads, head_dim 64), models/podkv-ref's 1007-token tokenizer (TOKENIZER:
# another, e.g. configs/podkv-ref-digits; then make the data with it too), on
# Gutenberg books and WikiText-2 (scripts/make_long_data.sh) with half of the
# sequences synthetic passkey, key-value retrieval and needle samples (passkey
# and niah in the prompt formats of podkv eval, niah's haystack the books' text),
# through a length
# curriculum; then checks retrieval at the full context.
#
#   1. stages at SEQS="256 1024 4160": stage 1 from random weights (--config;
#      INIT=MODEL_DIR: from that model's weights instead, e.g. to continue the
#      shipped model with one more stage), each later one from the previous
#      stage's checkpoint (--init PREV_DIR, a fresh AdamW state and a fresh
#      warmup + cosine schedule). Each step is
#      about BATCH_TOKENS tokens (65536: 256 x 256, 64 x 1024, 15 x 4160; the last
#      stage is 64 tokens longer than the longest eval prompt, 4096, so that the
#      answer generated after it stays within trained positions); a
#      stage's steps come from its time budget in seconds (BUDGETS="90 90 120")
#      times the expected tokens/s of that length (TOKENS_PER_S="1000000 900000
#      750000", podkv on an H200) over the tokens per step, unless STEPS gives
#      them. The held-out books (heldout.tokens) are the eval loss's text,
#      exactly (--val-fraction); passkey and kv accuracy (teacher-forced exact
#      answers of 64 fresh samples per task) are logged every EVAL_EVERY steps.
#      Every command is written to OUT_DIR/commands.sh as it runs. A stage whose
#      command finished before (OUT_DIR/NAME.done holds it) is kept, unless an
#      earlier stage ran again, so a rerun after an interruption continues.
#   2. the stage logs with steps counted on across stages (OUT_DIR/logs/*.jsonl,
#      a "stage" field added; all in OUT_DIR/train_log.jsonl) and their loss
#      curves in OUT_DIR/loss.png (podkv plot-loss; needs Cairo, which the GPU
#      build lacks: then the command to plot them elsewhere is printed).
#   3. acceptance at the full context, dense KV only: podkv eval --task passkey
#      and --task niah (haystack: the held-out books, heldout.txt) over
#      EVAL_LENGTHS (512,1024,2048,4096) x EVAL_DEPTHS (0,10,...,100 percent),
#      EVAL_SAMPLES (20) prompts per cell; every cell's accuracy, the minimum over
#      depths per length and PASS or FAIL go to OUT_DIR/acceptance.txt. Exit status
#      0 only when every cell of both grids is at least THRESHOLD (0.95); 3 when
#      one is below. Run again with no stage trained anew, an interrupted eval
#      continues (podkv eval --resume).
# OUT_DIR/summary.txt has the stages (steps, tokens, seconds, tokens/s, final
# losses and accuracies) and the acceptance; OUT_DIR/results.tgz everything
# but the weights and optimiser states (one small file to copy off the GPU machine).
#
#   scripts/train_long_model.sh BUILD_DIR OUT_DIR
# BUILD_DIR/podkv must be a build with CUDA (and with PCRE2: the tokenizer needs
# it). When it is missing and DEVICE is cuda, the script builds it there first
# (cmake -DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90, target podkv_cli, PCRE2's
# header from .deps/usr as scripts/use_deps_pcre2.sh explains). The data: DATA_DIR
# (default .data/long), or DATA_DIR.tar.xz, unpacked into DATA_DIR when the
# folder is absent. STOP_AFTER=build|train|plot stops after that step.
# Settings (env, defaults in brackets; per-stage lists are space-separated, one
# value per stage): DEVICE [cuda] (cpu checks the plumbing), THREADS [all cores],
# CONFIG [configs/podkv-long/config.json], INIT [none], TOKENIZER [models/podkv-ref],
# SEQS, BUDGETS, TOKENS_PER_S, STEPS [from the budgets], BATCH_TOKENS,
# LRS ["1e-3 1e-3 6e-4"], MIN_LR_RATIO [0.1], WARMUPS ["100 50 50"],
# WEIGHT_DECAY [0.1], BETA1 [0.9], BETA2 [0.95], CLIP [1.0], INIT_STD [0.02],
# SEED [1; stage k uses SEED+k-1], SYNTHETIC [passkey-eval,kv,niah], SYNTHETIC_FRACTION [0.5],
# SYNTHETIC_MIN_LENS ["0 0 0": --synthetic-min-len per stage, 0 = whole-sequence samples],
# PASSKEY_DIGITS [5], KV_PAIRS [0 = as many as fit], EVAL_EVERY [200],
# EVAL_BATCHES [4], ACCURACY_SAMPLES [64], PRECISION [bf16], PEAK_TFLOPS [790],
# EVAL_DEVICE [DEVICE], EVAL_LENGTHS, EVAL_DEPTHS, EVAL_SAMPLES, EVAL_SEED [0],
# THRESHOLD.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: train_long_model.sh BUILD_DIR OUT_DIR}
out=${2:?usage: train_long_model.sh BUILD_DIR OUT_DIR}
podkv=$build/podkv
device=${DEVICE:-cuda}
threads=${THREADS:-$(nproc)}
data=${DATA_DIR:-$root/.data/long}
config=${CONFIG:-$root/configs/podkv-long/config.json}
tokenizer=${TOKENIZER:-$root/models/podkv-ref}
python=${PYTHON:-python3}
stop_after=${STOP_AFTER:-}
read -r -a seqs <<<"${SEQS:-256 1024 4160}"
read -r -a budgets <<<"${BUDGETS:-90 90 120}"
read -r -a synthetic_min_lens <<<"${SYNTHETIC_MIN_LENS:-0 0 0}"
read -r -a rates <<<"${TOKENS_PER_S:-1000000 900000 750000}"
read -r -a lrs <<<"${LRS:-1e-3 1e-3 6e-4}"
read -r -a warmups <<<"${WARMUPS:-100 50 50}"
read -r -a fixed_steps <<<"${STEPS:-}"
batch_tokens=${BATCH_TOKENS:-65536}
stages=${#seqs[@]}
for list in budgets rates lrs warmups; do
  declare -n values=$list
  [ "${#values[@]}" = "$stages" ] || { echo "$list: ${#values[@]} values for $stages stages (SEQS)" >&2; exit 2; }
done
[ -z "${STEPS:-}" ] || [ "${#fixed_steps[@]}" = "$stages" ] || { echo "STEPS: ${#fixed_steps[@]} values for $stages stages" >&2; exit 2; }

# ---- 0. podkv, its tokenizer, the data
build_podkv() {
  # PCRE2's header from the ignored .deps/ when the machine lacks libpcre2-dev (scripts/use_deps_pcre2.sh).
  . "$root/scripts/use_deps_pcre2.sh"
  use_deps_pcre2 "$root"
  # With a .deps/ from scripts/fill_deps.sh, cpp-httplib's .pc sits beside PCRE2's: pointed at .deps/ too.
  . "$root/scripts/use_deps_httplib.sh"
  use_deps_httplib "$root"
  mkdir -p "$build"
  echo "building $podkv (CUDA, sm_90)" >&2
  cmake -S "$root" -B "$build" -DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF >"$build/configure.log" 2>&1 ||
    { tail -30 "$build/configure.log" >&2; exit 1; }
  grep -i pcre2 "$build/configure.log" >&2 || true
  cmake --build "$build" -j "$(nproc)" --target podkv_cli >"$build/build.log" 2>&1 ||
    { grep -E "error|Error" "$build/build.log" | head -40 >&2; exit 1; }
}
if [ ! -x "$podkv" ]; then
  [ "$device" = cuda ] || { echo "no podkv at $podkv: build it first" >&2; exit 2; }
  build_podkv
fi
[ "$stop_after" = build ] && exit 0
if ! echo "The pass key is 12345." | "$podkv" tokenize --tokenizer "$tokenizer" >/dev/null; then
  echo "$podkv cannot run $tokenizer's tokenizer (a build without PCRE2?). On a machine without libpcre2-dev," \
       "unpack its header into .deps/usr as scripts/use_deps_pcre2.sh says, carry .deps/usr, remove $build and run again." >&2
  exit 2
fi
if [ ! -f "$data/train.tokens" ] && [ -f "$data.tar.xz" ]; then
  mkdir -p "$data"
  tar -xJf "$data.tar.xz" -C "$data"
fi
for f in train.tokens heldout.tokens heldout.txt; do
  [ -f "$data/$f" ] || { echo "no $data/$f: make it with scripts/make_long_data.sh $data" >&2; exit 2; }
done
header_tokens() { od -An -t u8 -j 32 -N 8 "$1" | tr -d ' '; }  # the token count in a podkv token file's header
train_tokens=$(header_tokens "$data/train.tokens")
heldout_tokens=$(header_tokens "$data/heldout.tokens")
# The trainer holds out the last floor(total x fraction) tokens of the stream: exactly heldout.tokens.
val_fraction=$(awk -v h="$heldout_tokens" -v t="$train_tokens" 'BEGIN { printf "%.12g", (h + 0.5) / (h + t) }')

# ---- 1. the stages
mkdir -p "$out"
commands=$out/commands.sh
{
  echo "# scripts/train_long_model.sh $build $out ($(date -u +%FT%TZ), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo "# data: $data: train.tokens $train_tokens tokens, heldout.tokens $heldout_tokens tokens"
} >"$commands"
prev=""
rerun=0
names=()
for ((k = 0; k < stages; ++k)); do
  seq=${seqs[k]}
  batch=$((batch_tokens / seq))
  [ "$batch" -ge 1 ] || batch=1
  if [ -n "${STEPS:-}" ]; then
    steps=${fixed_steps[k]}
  else
    steps=$(awk -v s="${budgets[k]}" -v r="${rates[k]}" -v t="$((batch * seq))" 'BEGIN { n = int(s * r / t + 0.5); print (n < 1 ? 1 : n) }')
  fi
  lr=${lrs[k]}
  min_lr=$(awk -v l="$lr" -v r="${MIN_LR_RATIO:-0.1}" 'BEGIN { printf "%g", l * r }')
  name=stage$((k + 1))-seq$seq
  names+=("$name")
  dir=$out/$name
  if [ -z "$prev" ] && [ -n "${INIT:-}" ]; then
    start=(--init "$INIT")
  elif [ -z "$prev" ]; then
    start=(--config "$config" --init-std "${INIT_STD:-0.02}")
  else
    start=(--init "$prev")
  fi
  cmd=("$podkv" train "${start[@]}" --tokenizer "$tokenizer"
    --data "$data/train.tokens" "$data/heldout.tokens" --val-fraction "$val_fraction"
    --seq-len "$seq" --batch "$batch" --grad-accum 1 --steps "$steps"
    --lr "$lr" --min-lr "$min_lr" --warmup "${warmups[k]}" --weight-decay "${WEIGHT_DECAY:-0.1}"
    --beta1 "${BETA1:-0.9}" --beta2 "${BETA2:-0.95}" --clip "${CLIP:-1.0}" --seed "$((${SEED:-1} + k))"
    --synthetic "${SYNTHETIC:-passkey-eval,kv,niah}" --synthetic-fraction "${SYNTHETIC_FRACTION:-0.5}"
    --passkey-digits "${PASSKEY_DIGITS:-5}" --kv-pairs "${KV_PAIRS:-0}"
    --eval-every "${EVAL_EVERY:-200}" --eval-batches "${EVAL_BATCHES:-4}" --accuracy-samples "${ACCURACY_SAMPLES:-64}"
    --save-every 0 --device "$device" --precision "${PRECISION:-bf16}" --peak-tflops "${PEAK_TFLOPS:-790}"
    -t "$threads" --out "$dir")
  # Synthetic samples of every length from this many tokens up (the rest of the sequence text).
  min_len=${synthetic_min_lens[k]:-0}
  [ "$min_len" = 0 ] || cmd+=(--synthetic-min-len "$min_len")
  printf '%q ' "${cmd[@]}" >>"$commands"
  echo >>"$commands"
  if [ "$rerun" = 0 ] && [ -f "$dir.done" ] && [ "$(head -1 "$dir.done")" = "${cmd[*]}" ]; then
    echo "== $name: done before ($dir.done), kept" >&2
  else
    rerun=1
    rm -rf "$dir" "$dir.done"
    echo "== $name: $steps steps of $batch x $seq tokens (lr $lr -> $min_lr, warmup ${warmups[k]})" >&2
    t0=$(date +%s.%N)
    "${cmd[@]}" 2>&1 | tee "$out/$name.txt"
    t1=$(date +%s.%N)
    { echo "${cmd[*]}"; awk -v a="$t0" -v b="$t1" 'BEGIN { printf "wall_s %.1f\n", b - a }'; } >"$dir.done"
  fi
  prev=$dir
done
[ "$stop_after" = train ] && exit 0

# ---- 2. one log with steps counted across the stages, and the picture
"$python" - "$out" "$batch_tokens" "${names[@]}" <<'PY'
import json, os, sys
out, names = sys.argv[1], sys.argv[3:]
os.makedirs(f"{out}/logs", exist_ok=True)
offset, rows, summary = 0, [], []
for name in names:
    lines = [json.loads(l) for l in open(f"{out}/{name}/train_log.jsonl") if l.strip()]
    steps = [r for r in lines if "loss" in r]
    evals = [r for r in lines if "eval_loss" in r]
    with open(f"{out}/logs/{name}.jsonl", "w") as f:
        for r in lines:
            r = dict(r, stage=name, stage_step=r["step"], step=r["step"] + offset)
            f.write(json.dumps(r, sort_keys=True) + "\n")
            rows.append(r)
    seq = int(name.split("seq")[1])
    state = json.load(open(f"{out}/{name}/trainer_state.json"))
    wall = dict(l.split() for l in open(f"{out}/{name}.done").read().splitlines()[1:]).get("wall_s", "?")
    last, final = steps[-1], evals[-1]
    tokens = last["step"] * (int(sys.argv[2]) // seq) * seq
    acc = "  ".join(f"{k[9:]} {v:.3f}" for k, v in sorted(final.items()) if k.startswith("accuracy_"))
    summary.append(f"{name}: {last['step']} steps (checkpoint step {state.get('step')}), {tokens / 1e6:.1f}M tokens, "
                   f"train {last['elapsed_s']:.1f} s, "
                   f"wall {wall} s, {sum(r['tokens_per_s'] for r in steps[1:] or steps) / len(steps[1:] or steps):,.0f} tok/s mean (steps after the first), "
                   f"loss {last['loss']:.4f}, eval loss {final['eval_loss']:.4f}, accuracy {acc}")
    offset += last["step"]
with open(f"{out}/train_log.jsonl", "w") as f:
    f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
open(f"{out}/summary.txt", "w").write("\n".join(summary) + "\n")
print("\n".join(summary), file=sys.stderr)
PY
labels=()
for ((k = 0; k < stages; ++k)); do labels+=(--label "stage $((k + 1)), ${seqs[k]} tokens"); done
plot=("$podkv" plot-loss)
for name in "${names[@]}"; do plot+=("$out/logs/$name.jsonl"); done
plot+=("${labels[@]}" --title "podkv-long: ${seqs[*]} token stages, $batch_tokens tokens per step" --out "$out/loss.png")
printf '%q ' "${plot[@]}" >>"$commands"
echo >>"$commands"
if ! "${plot[@]}" 2>"$out/plot.txt"; then
  cat "$out/plot.txt" >&2
  echo "(no loss.png; plot where podkv has Cairo, in $out:" >&2
  echo "   build/podkv plot-loss$(for n in "${names[@]}"; do printf ' logs/%s.jsonl' "$n"; done)$(printf " %q" "${labels[@]}") --out loss.png)" >&2
fi
[ "$stop_after" = plot ] && exit 0

# ---- 3. acceptance at the full context: dense passkey and needle grids
final=$prev
eval_device=${EVAL_DEVICE:-$device}
lengths=${EVAL_LENGTHS:-512,1024,2048,4096}
depths=${EVAL_DEPTHS:-0,10,20,30,40,50,60,70,80,90,100}
mkdir -p "$out/eval"
weights=()
[ "$eval_device" = cuda ] && weights=(--cuda-weights f32)
for task in passkey niah; do
  haystack=()
  [ "$task" = niah ] && haystack=(--data "$data/heldout.txt")
  cmd=("$podkv" eval -m "$final" --task "$task" --kv dense "${haystack[@]}" --lengths "$lengths" --depths "$depths"
    --samples "${EVAL_SAMPLES:-20}" --seed "${EVAL_SEED:-0}" --device "$eval_device" "${weights[@]}" -t "$threads"
    --no-progress --out "$out/eval/$task")
  printf '%q ' "${cmd[@]}" >>"$commands"
  echo >>"$commands"
  # The same command on the same model (no stage ran now) continues an interrupted run.
  if [ "$rerun" = 0 ] && [ -f "$out/eval/$task/settings.json" ] && [ "$(cat "$out/eval/$task.cmd" 2>/dev/null)" = "${cmd[*]}" ]; then
    cmd+=(--resume)
  else
    rm -rf "$out/eval/$task"
    echo "${cmd[*]}" >"$out/eval/$task.cmd"
  fi
  echo "== acceptance: $task" >&2
  t0=$(date +%s)
  "${cmd[@]}" >"$out/eval/$task.txt" 2>&1 || { cat "$out/eval/$task.txt" >&2; exit 1; }
  echo "   $(($(date +%s) - t0)) s" >&2
done
set +e
"$python" - "$out" "${THRESHOLD:-0.95}" <<'PY' | tee "$out/acceptance.txt"
import json, sys
out, threshold = sys.argv[1], float(sys.argv[2])
ok = True
for task in ("passkey", "niah"):
    r = json.load(open(f"{out}/eval/{task}/results.json"))
    dense = next(p for p in r["policies"] if p["label"] == "dense")
    grid = dense["grid"]  # accuracy[depth][length]
    lengths, depths, acc = grid["lengths"], grid["depths"], grid["accuracy"]
    print(f"{task}: dense accuracy, {r['settings']['samples']} prompts per cell (depth x length)")
    print("| depth | " + " | ".join(str(n) for n in lengths) + " |")
    print("| ---: |" + " ---: |" * len(lengths))
    for d, row in zip(depths, acc):
        print(f"| {d:g}% | " + " | ".join(f"{a:.2f}" for a in row) + " |")
    worst = [min(acc[i][j] for i in range(len(depths))) for j in range(len(lengths))]
    print("| min over depths | " + " | ".join(f"{w:.2f}" for w in worst) + " |")
    low = [(depths[i], lengths[j], acc[i][j]) for i in range(len(depths)) for j in range(len(lengths)) if acc[i][j] < threshold]
    print(f"{task}: minimum {min(worst):.3f}: " + ("PASS" if not low else
          f"FAIL, {len(low)} cells below {threshold}: " + ", ".join(f"{l} tokens at {d:g}%: {a:.2f}" for d, l, a in low[:8])
          + (", ..." if len(low) > 8 else "")))
    ok &= not low
print("acceptance: " + ("PASS" if ok else "FAIL") + f" (every cell >= {threshold})")
sys.exit(0 if ok else 3)
PY
status=${PIPESTATUS[0]}
set -e
cat "$out/acceptance.txt" >>"$out/summary.txt"
results=$(mktemp)
tar -czf "$results" -C "$out" --exclude='*.safetensors' --exclude=results.tgz .
chmod 644 "$results"
mv "$results" "$out/results.tgz"
echo "wrote $out/summary.txt, $out/results.tgz (everything but the weights)" >&2
exit "$status"
