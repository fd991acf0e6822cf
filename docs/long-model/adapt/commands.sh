# The adaptation of the shipped twin, models/podkv-long-pod (H200, 2026-12-03, session 15: the
# fifth twin). TRAINED was the shipped stage-5 dense model (out/base5 = models/podkv-long, bf16,
# sha256 94bb6df4...): the f32 stage-5 checkpoint stayed on the machine of the first call, so this
# adaptation started from its bf16 copy (stage 4 had started from a bf16 model the same way).
# POD_CONFIG is the delta-0.3 grouping of ../analysis (anchors [0,4,6,7] [0,1,3] [0,7] [0,6,7],
# 29.2% expected at 4160 tokens, 29.2% measured at 4096).
#
# Why not the analysis's own choice: with the script's floor of that day (MIN_SAVING 0.30) it
# chose delta 0.2, one block of all 8 layers per KV head (40.9% expected). 1500 steps of
# adaptation with that grouping left teacher-forced passkey accuracy at 9% and the eval's passkey
# at 28% (../delta-0.2-experiment). The floor is 0.25 now, the saving the issue asks for, and the
# script then chooses delta 0.3 from the same summaries.
#
# 1500 steps of 15 x 4160 tokens, lr 2e-4 to 2e-5, half of the sequences synthetic, each synthetic
# sample of a random length from 2048 to 4160 tokens: the settings of the third and fourth twins.
POD_CONFIG=.data/pod/delta-0.3.json TRAINED=out/base5 CALIB=.data/calib.txt ADAPT_STEPS=1500 ADAPT_EVAL_EVERY=500 \
  ADAPT_ACCURACY_SAMPLES=256 ADAPT_SYNTHETIC_MIN_LEN=2048 THREADS=16 scripts/pod_long_model.sh build-cuda out/pod3
# pod_commands.sh: the commands it ran. adapt.txt: the adaptation's output; train_log.jsonl: its
# log. Held-out loss: dense 1.6229; PoD before adaptation 1.7952, after 1.6331. Teacher-forced
# accuracy after 1500 steps (256 samples each): passkey 0.996, needle 0.992.
# Shipped: out/pod3/podkv-long-pod/model.safetensors -> models/podkv-long-pod (sha256 6575f9ec...),
# out/pod3/pod.json (= ../analysis/delta-0.3.json) beside both models.
#
# adapt_loss.png, drawn here (the GPU build has no Cairo), beside the fourth twin's log and the
# delta-0.2 attempt's:
#   build/podkv plot-loss train_log.jsonl ../delta-0.2-experiment/adapt_log.jsonl ../fourth-twin/adapt/train_log.jsonl \
#     --label "fifth twin (shipped): stage-5 model, delta 0.3 (29.2% saved)" \
#     --label "stage-5 model, delta 0.2: one 8-layer block per KV head (40.8% saved)" \
#     --label "fourth twin: stage-4 model, delta 0.3 (30.6% saved)" \
#     --title "PoD adaptation of podkv-long: samples of 2048-4160 tokens, 1500 steps" --out adapt_loss.png
