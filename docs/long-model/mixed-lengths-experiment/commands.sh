# 500 more adaptation steps from the shipped twin (models/podkv-long-pod), the
# synthetic samples of every length from 512 tokens to the sequence and the rest
# of their sequence training text (H200, 2026-12-03; adapt.txt, train_log.jsonl).
# Not shipped: see docs/long-model/README.md.
podkv adapt -m models/podkv-long-pod --pod-config models/podkv-long-pod/pod.json \
  --data .data/long/train.tokens .data/long/heldout.tokens --val-fraction 0.026085370322 \
  --seq-len 4160 --batch 15 --steps 500 --lr 1e-4 --min-lr 1e-5 --warmup 20 \
  --synthetic passkey-eval,kv,niah --synthetic-fraction 0.5 --synthetic-min-len 512 \
  --eval-every 250 --accuracy-samples 128 --device cuda --precision bf16 --peak-tflops 790 -t 16 --out out/adapt2
python3 scripts/to_bf16.py out/adapt2/model.safetensors out/twin3/model.safetensors
# The comparison (CPU; twin2 = the shipped twin, twin3 = this one):
podkv eval -m models/podkv-long --task passkey --kv pod:model=out/twin3:name=twin3 --lengths 4096 \
  --depths 0,20,40,60,80,100 --samples 5 --seed 0 -t 2 --no-progress --show-answers --out out/twin3-pk
podkv eval -m models/podkv-long --task niah --data .data/long/heldout.txt \
  --kv pod:model=out/twin2:name=twin2,pod:model=out/twin3:name=twin3 --lengths 2080,4096 \
  --depths 0,20,40,60,80,100 --samples 5 --seed 0 -t 2 --no-progress --out out/cmp-niah
podkv eval -m models/podkv-long --task passkey --kv pod:model=out/twin2:name=twin2,pod:model=out/twin3:name=twin3 \
  --lengths 1040,2080 --depths 0,20,40,60,80,100 --samples 5 --seed 0 -t 2 --no-progress --out out/cmp-pk
