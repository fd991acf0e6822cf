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
# 4096 tokens of the held-out books without a BOS (the model was trained on text
# rows without one; --no-bos), the first 2048 prefilled, the rest decoded 256 at
# a time. Results, tables and heatmaps go to OUT_DIR/TASK/.
# blocks-passkey and blocks-agreement: what other blocks do (the analysed
# groupings at delta 0.4 and 0.2 of docs/long-model/analysis, on the trained
# model and on the twin adapted for delta 0.3), passkey at 1040 and 4096 tokens
# and agreement as above. twin-agreement and twin-perplexity: the adapted twin
# alone (-m models/podkv-long-pod), its dense cache against its PoD cache, on
# the windows above (the adapted weights differ from the trained ones, so the
# main run's agreement of pod-adapted with the trained model's dense mixes the
# two).
#
#   scripts/eval_long_model.sh BUILD_DIR OUT_DIR [TASK...]
# TASK: passkey, niah, kv-retrieval, perplexity, agreement (default: all),
# blocks-passkey, blocks-agreement, twin-agreement, twin-perplexity.
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
common=(--sink 16 --recent 256 --budget 752 --device "${DEVICE:-cpu}" --no-progress)
[ -z "${THREADS:-}" ] || common+=(-t "$THREADS")
analysis=$root/docs/long-model/analysis
blocks="dense,pod:model=$adapted:name=pod-adapted"
for d in 0.4 0.2; do
  blocks+=",pod:config=$analysis/delta-$d.json:name=pod-analysed-delta-$d"
  blocks+=",pod:config=$analysis/delta-$d.json:model=$adapted:name=pod-adapted-delta-$d"
done
for task in "${tasks[@]}"; do
  case $task in
    passkey | niah | kv-retrieval | perplexity | agreement | blocks-passkey | blocks-agreement | twin-agreement | twin-perplexity) ;;
    *) echo "unknown task $task (passkey, niah, kv-retrieval, perplexity, agreement, blocks-passkey, blocks-agreement, twin-agreement, twin-perplexity)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
for task in "${tasks[@]}"; do
  name=${task#blocks-}
  name=${name#twin-}
  policies=$kv
  weights=(-m "$model")
  [[ $task != blocks-* ]] || policies=$blocks
  [[ $task != twin-* ]] || { policies=dense,pod; weights=(-m "$adapted"); }
  case $task in
    blocks-passkey) args=(--lengths 1040,4096 --depths 0,20,40,60,80,100 --samples "${SAMPLES:-5}") ;;
    blocks-agreement | twin-agreement | twin-perplexity) args=(--data "$haystack" -c 4096 --prefill 2048 --decode-chunk 256 --samples "${WINDOWS:-4}" --no-bos) ;;
    passkey | kv-retrieval) args=(--lengths 520,1040,2080,4096 --depths 0,20,40,60,80,100 --samples "${SAMPLES:-5}") ;;
    niah) args=(--data "$haystack" --lengths 520,1040,2080,4096 --depths 0,20,40,60,80,100 --samples "${SAMPLES:-5}") ;;
    perplexity | agreement) args=(--data "$haystack" -c 4096 --prefill 2048 --decode-chunk 256 --samples "${WINDOWS:-4}" --no-bos) ;;
  esac
  resume=()
  [ -f "$out/$task/settings.json" ] && resume=(--resume)
  cmd=("$build/podkv" eval "${weights[@]}" "${common[@]}" --kv "$policies" --task "$name" "${args[@]}" --out "$out/$task" "${resume[@]}")
  echo "${cmd[*]}" | sed "s|$root/||g" >"$out/$task.cmd"
  t0=$(date +%s)
  "${cmd[@]}" >"$out/$task.md.tmp"
  mv "$out/$task.md.tmp" "$out/$task.md"
  echo "$task: $(($(date +%s) - t0)) s" >&2
done
