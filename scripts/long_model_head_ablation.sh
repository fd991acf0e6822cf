#!/usr/bin/env bash
# Which (layer, KV head) pairs carry retrieval in the shipped long-context model
# (models/podkv-long): for every layer l >= 1 and KV head h, a pod.json in which
# only that pair shares the distant keys of layer l-1 (every other pair keeps
# its own), then one podkv eval of the passkey task over all 28 of them and
# dense: 4096-token prompts, the passkey 10% and 50% deep, SAMPLES [5] prompts
# per cell (docs/long-model/head-ablation).
#
#   scripts/long_model_head_ablation.sh BUILD_DIR OUT_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: long_model_head_ablation.sh BUILD_DIR OUT_DIR}
out=${2:?usage: long_model_head_ablation.sh BUILD_DIR OUT_DIR}
model=$root/models/podkv-long
read -r layers heads < <(python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))
print(c["num_hidden_layers"], c.get("num_key_value_heads", c["num_attention_heads"]))' "$model/config.json")
mkdir -p "$out/configs"
kv=dense
for ((l = 1; l < layers; ++l)); do
  for ((h = 0; h < heads; ++h)); do
    python3 - "$layers" "$heads" "$l" "$h" >"$out/configs/l${l}h${h}.json" <<'PY'
import json, sys
layers, heads, l, h = map(int, sys.argv[1:])
anchors = [[x for x in range(layers) if not (head == h and x == l)] for head in range(heads)]
print(json.dumps({"sink_tokens": 16, "recent_tokens": 256, "anchors": anchors}))
PY
    kv+=",pod:config=$out/configs/l${l}h${h}.json:name=l${l}h${h}"
  done
done
"$build/podkv" eval -m "$model" --task passkey --kv "$kv" --lengths 4096 --depths 10,50 --samples "${SAMPLES:-5}" \
  --seed 0 -t "${THREADS:-$(nproc)}" --no-progress --out "$out/passkey" >"$out/passkey.md"
python3 - "$out" "$layers" "$heads" <<'PY' | tee "$out/summary.md"
import json, sys
out, layers, heads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = json.load(open(f"{out}/passkey/results.json"))
acc = {p["label"]: p["accuracy"] for p in r["policies"]}
print(f"Passkey accuracy when only (layer l, KV head h) shares layer l-1's distant keys; dense: {acc['dense']:.0%}")
print()
print("| layer | " + " | ".join(f"head {h}" for h in range(heads)) + " |")
print("| ---: |" + " ---: |" * heads)
for l in range(1, layers):
    print(f"| {l} | " + " | ".join(f"{acc[f'l{l}h{h}']:.0%}" for h in range(heads)) + " |")
PY
