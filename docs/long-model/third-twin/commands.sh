# The adaptation of the third twin (shipped as models/podkv-long-pod from 2026-12-03 until the fourth, ../adapt/; README.md says how to get its weights).
# Two candidates in one device call (out/carry held models/podkv-long's bf16 weights, same
# sha256 3bb7f767..., its config and tokenizer, and models/podkv-long-pod's delta-0.3 pod.json:
# anchors [0,4,5] [0,1,3] [0] [0,6], 33.6% saved, not re-analysed: POD_CONFIG).
# Each: 1500 steps of 15 x 4160 tokens, lr 2e-4 to 2e-5, the synthetic samples
# (half of the sequences) of every length from MIN tokens to 4160, training text after them.
for MIN in 512 2048; do
  POD_CONFIG=out/carry/pod.json TRAINED=out/carry CALIB=out/carry/calib.txt ADAPT_STEPS=1500 ADAPT_EVAL_EVERY=500 \
    ADAPT_ACCURACY_SAMPLES=256 ADAPT_SYNTHETIC_MIN_LEN=$MIN THREADS=16 scripts/pod_long_model.sh build-cuda out/c$MIN
done
# From a checkout the same run is
#   POD_CONFIG=models/podkv-long-pod/pod.json TRAINED=models/podkv-long ADAPT_STEPS=1500 ADAPT_EVAL_EVERY=500 \
#     ADAPT_ACCURACY_SAMPLES=256 ADAPT_SYNTHETIC_MIN_LEN=2048 scripts/pod_long_model.sh build-cuda out/long
# Then the grids of docs/long-model/eval on the GPU, dense and both candidates (candidates/grid-*.md),
# and the LongModel test's prompt (passkey, 4096 tokens, depth 10%, sample 0: candidates/grid-test.md):
kv=dense,pod:model=out/c512/podkv-long-pod:name=min512,pod:model=out/c2048/podkv-long-pod:name=min2048
for task in passkey niah; do h=; [ $task = niah ] && h="--data .data/long/heldout.txt"
  build-cuda/podkv eval -m out/carry --task $task $h --kv $kv --lengths 520,1040,2080,4096 \
    --depths 0,20,40,60,80,100 --samples 5 --seed 0 --device cuda -t 16 --no-progress --out out/grid/$task
done
build-cuda/podkv eval -m out/carry --task passkey --kv $kv --lengths 4096 --depths 10 --samples 1 --seed 0 \
  --device cuda -t 16 --no-progress --out out/grid/test
# min2048 was shipped: 117/120 passkeys and 119/120 needles against 117 and 118 for min512 (a tie
# within noise), and it answers the test's prompt, which min512 does not.
cp out/c2048/podkv-long-pod/model.safetensors models/podkv-long-pod/   # sha256 0e95e66f...
