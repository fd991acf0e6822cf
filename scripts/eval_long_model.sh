#!/usr/bin/env bash
# The evidence of docs/long-model: one podkv eval run per task over every KV
# policy at comparable settings, on the shipped long-context model
# (models/podkv-long, its pod.json from podkv analyze) and its PoD-adapted twin
# (models/podkv-long-pod, run through the policy setting model=):
#   dense          the full cache
#   pod-analysed   PoD with the analysed blocks on the model as trained (no adaptation)
#   pod-adapted    PoD with the same blocks on the adapted twin
#   streaming      16 sink + 1008 recent tokens (1024 kept)
#   h2o, snapkv    16 sink + 256 recent + 752 selected distant tokens (1024 kept)
#   cla            keys and values of layer pairs shared (half the cache)
#   pod+snapkv     the adapted twin's PoD, 752 distant tokens kept per block
# Grids (passkey, niah over the held-out books, kv-retrieval): lengths 1/8, 1/4,
# 1/2 of the 4160-token context and 4096, depths 0-100% in steps of 20,
# SAMPLES [5] prompts per cell; perplexity and agreement: WINDOWS [4] windows of
# 4096 tokens of the held-out books (the first 2048 prefilled, the rest decoded
# 256 at a time). Results, tables and heatmaps go to OUT_DIR/TASK/.
#
#   scripts/eval_long_model.sh BUILD_DIR OUT_DIR [TASK...]
# TASK: passkey, niah, kv-retrieval, perplexity, agreement (default: all).
# DEVICE [cpu], THREADS [all cores], HAYSTACK [.data/long/heldout.txt; made by
# scripts/make_long_data.sh]. An interrupted run continues (--resume).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: eval_long_model.sh BUILD_DIR OUT_DIR [TASK...]}
out=${2:?usage: eval_long_model.sh BUILD_DIR OUT_DIR [TASK...]}
shift 2
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(passkey niah kv-retrieval perplexity agreement)
model=$root/models/podkv-long
adapted=$root/models/podkv-long-pod
haystack=${HAYSTACK:-$root/.data/long/heldout.txt}
[ -f "$haystack" ] || { echo "no $haystack: make it with scripts/make_long_data.sh .data/long" >&2; exit 2; }
kv="dense,pod:name=pod-analysed,pod:model=$adapted:name=pod-adapted,streaming:recent=1008,h2o,snapkv,cla"
kv+=",pod+snapkv:model=$adapted:name=pod+snapkv"
common=(-m "$model" --kv "$kv" --sink 16 --recent 256 --budget 752 --device "${DEVICE:-cpu}" --no-progress)
[ -z "${THREADS:-}" ] || common+=(-t "$THREADS")
mkdir -p "$out"
for task in "${tasks[@]}"; do
  case $task in
    passkey | kv-retrieval) args=(--lengths 520,1040,2080,4096 --depths 0,20,40,60,80,100 --samples "${SAMPLES:-5}") ;;
    niah) args=(--data "$haystack" --lengths 520,1040,2080,4096 --depths 0,20,40,60,80,100 --samples "${SAMPLES:-5}") ;;
    perplexity | agreement) args=(--data "$haystack" -c 4096 --prefill 2048 --decode-chunk 256 --samples "${WINDOWS:-4}") ;;
    *) echo "unknown task $task" >&2; exit 2 ;;
  esac
  resume=()
  [ -f "$out/$task/settings.json" ] && resume=(--resume)
  cmd=("$build/podkv" eval "${common[@]}" --task "$task" "${args[@]}" --out "$out/$task" "${resume[@]}")
  echo "${cmd[*]}" | sed "s|$root/||g" >"$out/$task.cmd"
  t0=$(date +%s)
  "${cmd[@]}" >"$out/$task.md.tmp"
  mv "$out/$task.md.tmp" "$out/$task.md"
  echo "$task: $(($(date +%s) - t0)) s" >&2
done
