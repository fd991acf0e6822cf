# The shipped dense model (models/podkv-long, bf16, sha256 94bb6df4..., stage 5) at its full context on the H200,
# 2026-12-03 (session 15): 40 fresh prompts (seed 1, the prompts of ../stage4/full-context; the 10-prompt grid
# beside this folder used seed 0) per depth. out/ship/podkv-long was the bf16 copy (scripts/to_bf16.py) of the
# stage-5 checkpoint, the same bytes as models/podkv-long. acceptance.txt: python3 summarize.py full-context.
for task in passkey niah; do h=; [ $task = niah ] && h="--data .data/long/heldout.txt"
  build-cuda/podkv eval -m out/ship/podkv-long --task $task $h --kv dense --lengths 4096 \
    --depths 0,10,20,30,40,50,60,70,80,90,100 --samples 40 --seed 1 --device cuda -t 16 --no-progress \
    --out out/full-context/$task
done
