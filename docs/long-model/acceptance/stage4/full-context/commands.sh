# The shipped dense model (models/podkv-long, bf16, sha256 ccd8d41d...) at its full context on the H200,
# 2026-12-03: 40 fresh prompts (seed 1; the 10-prompt grid beside this folder used seed 0) per depth.
for task in passkey niah; do h=; [ $task = niah ] && h="--data .data/long/heldout.txt"
  build-cuda/podkv eval -m models/podkv-long --task $task $h --kv dense --lengths 4096 \
    --depths 0,10,20,30,40,50,60,70,80,90,100 --samples 40 --seed 1 --device cuda -t 16 --no-progress \
    --out docs/long-model/acceptance/full-context/$task
done
