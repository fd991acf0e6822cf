# The analysis and adaptation of the shipped twin, models/podkv-long-pod (H200, 2026-12-03,
# session 14: the fourth twin). TRAINED is the new dense model in f32, out/dense/stage1-seq4160
# (stage 4 of ../../train; models/podkv-long is its bf16 copy). calib.txt is the first 300,000
# bytes of The Secret Adversary (1155-0.txt), as for the earlier analyses (calibration
# fingerprint 99d825537453fa0f). No POD_CONFIG: the script analysed the model at the default
# deltas (0.5 0.4 0.3 0.2 0.1) and chose delta 0.3, the largest whose expected saving is at
# least 0.30 (../analysis/choice.txt): anchors [0,4,5] [0,1,3] [0,7] [0,6,7], 30.7% expected.
# Then 1500 steps of 15 x 4160 tokens, lr 2e-4 to 2e-5, half of the sequences synthetic, each
# synthetic sample of a random length from 2048 to 4160 tokens: the settings of the third twin.
TRAINED=out/dense/stage1-seq4160 CALIB=out/carry/calib.txt ADAPT_STEPS=1500 ADAPT_EVAL_EVERY=500 \
  ADAPT_ACCURACY_SAMPLES=256 ADAPT_SYNTHETIC_MIN_LEN=2048 THREADS=16 scripts/pod_long_model.sh build-cuda out/pod
# ../analysis/pod_commands.sh: every command it ran (analysis and adaptation). adapt.txt: the
# adaptation's output; train_log.jsonl: its log. Held-out loss: dense 1.6220, PoD before 1.8113,
# after 1.6298.
# Shipped: out/pod/podkv-long/model.safetensors -> models/podkv-long (sha256 ccd8d41d...),
# out/pod/podkv-long-pod/model.safetensors -> models/podkv-long-pod (sha256 371feb5d...),
# out/pod/pod.json (= ../analysis/delta-0.3.json) beside both.
#
# A quick check on the GPU afterwards (tables in check-*.md): dense, pod-analysed and
# pod-adapted on the passkey and needle grids of ../eval, and the LongModel test's prompt
# (passkey, 4096 tokens, depth 10%, sample 0). Dense 120/120 passkeys and 120/120 needles,
# pod-adapted 119 and 120, pod-analysed 15 and 21; the test's prompt answered by dense and
# pod-adapted (" 33360. The "), not by pod-analysed (" King Ara").
kv=dense,pod:name=pod-analysed,pod:model=out/pod/podkv-long-pod:name=pod-adapted
for task in passkey niah; do h=; [ $task = niah ] && h="--data .data/long/heldout.txt"
  build-cuda/podkv eval -m out/pod/podkv-long --task $task $h --kv $kv --lengths 520,1040,2080,4096 \
    --depths 0,20,40,60,80,100 --samples 5 --seed 0 --device cuda -t 16 --no-progress --out out/grid/$task
done
build-cuda/podkv eval -m out/pod/podkv-long --task passkey --kv $kv --lengths 4096 --depths 10 --samples 1 --seed 0 \
  --device cuda -t 16 --no-progress --out out/grid/test
# adapt_loss.png, drawn here (the GPU build has no Cairo), beside the third twin's log:
#   build/podkv plot-loss train_log.jsonl ../../third-twin/train_log.jsonl \
#     --label "fourth twin (shipped): stage-4 model, its blocks (30.6% saved)" \
#     --label "third twin: stage-3 model, its blocks (33.6% saved)" \
#     --title "PoD adaptation of podkv-long: delta 0.3, samples of 2048-4160 tokens, 1500 steps" --out adapt_loss.png
