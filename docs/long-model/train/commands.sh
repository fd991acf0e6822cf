# scripts/train_long_model.sh build-cuda out/long (2026-12-02T20:40:20Z, commit c66e7fb)
# data: /work/main/.data/long: train.tokens 37114507 tokens, heldout.tokens 994076 tokens
build-cuda/podkv train --config /work/main/configs/podkv-long/config.json --init-std 0.02 --tokenizer /work/main/models/podkv-ref --data /work/main/.data/long/train.tokens /work/main/.data/long/heldout.tokens --val-fraction 0.026085370322 --seq-len 256 --batch 256 --grad-accum 1 --steps 1373 --lr 1e-3 --min-lr 0.0001 --warmup 100 --weight-decay 0.1 --beta1 0.9 --beta2 0.95 --clip 1.0 --seed 1 --synthetic passkey-eval\,kv\,niah --synthetic-fraction 0.5 --passkey-digits 5 --kv-pairs 0 --eval-every 200 --eval-batches 4 --accuracy-samples 64 --save-every 0 --device cuda --precision bf16 --peak-tflops 790 -t 16 --out out/long/stage1-seq256 
build-cuda/podkv train --init out/long/stage1-seq256 --tokenizer /work/main/models/podkv-ref --data /work/main/.data/long/train.tokens /work/main/.data/long/heldout.tokens --val-fraction 0.026085370322 --seq-len 1024 --batch 64 --grad-accum 1 --steps 1236 --lr 1e-3 --min-lr 0.0001 --warmup 50 --weight-decay 0.1 --beta1 0.9 --beta2 0.95 --clip 1.0 --seed 2 --synthetic passkey-eval\,kv\,niah --synthetic-fraction 0.5 --passkey-digits 5 --kv-pairs 0 --eval-every 200 --eval-batches 4 --accuracy-samples 64 --save-every 0 --device cuda --precision bf16 --peak-tflops 790 -t 16 --out out/long/stage2-seq1024 
build-cuda/podkv train --init out/long/stage2-seq1024 --tokenizer /work/main/models/podkv-ref --data /work/main/.data/long/train.tokens /work/main/.data/long/heldout.tokens --val-fraction 0.026085370322 --seq-len 4160 --batch 15 --grad-accum 1 --steps 1442 --lr 6e-4 --min-lr 6e-05 --warmup 50 --weight-decay 0.1 --beta1 0.9 --beta2 0.95 --clip 1.0 --seed 3 --synthetic passkey-eval\,kv\,niah --synthetic-fraction 0.5 --passkey-digits 5 --kv-pairs 0 --eval-every 200 --eval-batches 4 --accuracy-samples 64 --save-every 0 --device cuda --precision bf16 --peak-tflops 790 -t 16 --out out/long/stage3-seq4160 
build-cuda/podkv plot-loss out/long/logs/stage1-seq256.jsonl out/long/logs/stage2-seq1024.jsonl out/long/logs/stage3-seq4160.jsonl --label stage\ 1\,\ 256\ tokens --label stage\ 2\,\ 1024\ tokens --label stage\ 3\,\ 4160\ tokens --title podkv-long:\ 256\ 1024\ 4160\ token\ stages\,\ 65536\ tokens\ per\ step --out out/long/loss.png 

# Stage 4 (H200, 2026-12-03, session 14): the shipped stage-3 model continued with one more
# 4160-token stage. out/base held the old models/podkv-long (bf16, sha256 3bb7f767...,
# `git show 863a4df:models/podkv-long/model.safetensors`); INIT starts the script's first stage
# from its weights, so the run names this stage stage1-seq4160 (here stage4-seq4160.txt and
# "stage": "stage4-seq4160" in train_log.jsonl, its steps counted on from stage 3's 4051).
# Half of the sequences synthetic as before, but each synthetic sample of a random length from
# 256 to 4160 tokens (--synthetic-min-len 256; training text fills the rest of the row).
#   INIT=out/base SEQS=4160 BUDGETS=120 TOKENS_PER_S=750000 LRS=3e-4 WARMUPS=50 SEED=5 SYNTHETIC_MIN_LENS=256 \
#     EVAL_SAMPLES=10 THREADS=16 scripts/train_long_model.sh build-cuda out/dense
# scripts/train_long_model.sh build-cuda out/dense (2026-12-03T17:54:41Z, commit 2caf8a6)
# (the GPU machine's copy reports its checkout's commit; the tree that ran was 863a4df, which added INIT)
# data: /work/main/.data/long: train.tokens 37114507 tokens, heldout.tokens 994076 tokens
build-cuda/podkv train --init out/base --tokenizer /work/main/models/podkv-ref --data /work/main/.data/long/train.tokens /work/main/.data/long/heldout.tokens --val-fraction 0.026085370322 --seq-len 4160 --batch 15 --grad-accum 1 --steps 1442 --lr 3e-4 --min-lr 3e-05 --warmup 50 --weight-decay 0.1 --beta1 0.9 --beta2 0.95 --clip 1.0 --seed 5 --synthetic passkey-eval\,kv\,niah --synthetic-fraction 0.5 --passkey-digits 5 --kv-pairs 0 --eval-every 200 --eval-batches 4 --accuracy-samples 64 --save-every 0 --device cuda --precision bf16 --peak-tflops 790 -t 16 --out out/dense/stage1-seq4160 --synthetic-min-len 256 
# the acceptance grids of ../acceptance (acceptance/*.cmd):
build-cuda/podkv eval -m out/dense/stage1-seq4160 --task passkey --kv dense --lengths 512\,1024\,2048\,4096 --depths 0\,10\,20\,30\,40\,50\,60\,70\,80\,90\,100 --samples 10 --seed 0 --device cuda --cuda-weights f32 -t 16 --no-progress --out out/dense/eval/passkey 
build-cuda/podkv eval -m out/dense/stage1-seq4160 --task niah --kv dense --data /work/main/.data/long/heldout.txt --lengths 512\,1024\,2048\,4096 --depths 0\,10\,20\,30\,40\,50\,60\,70\,80\,90\,100 --samples 10 --seed 0 --device cuda --cuda-weights f32 -t 16 --no-progress --out out/dense/eval/niah 
# Then models/podkv-long = scripts/to_bf16.py of out/dense/stage1-seq4160 (../analysis/pod_commands.sh).
# loss.png over the four stages, drawn here (the GPU build has no Cairo) from train_log.jsonl split
# by its "stage" field into logs/STAGE.jsonl:
#   build/podkv plot-loss logs/stage1-seq256.jsonl logs/stage2-seq1024.jsonl logs/stage3-seq4160.jsonl logs/stage4-seq4160.jsonl \
#     --label "stage 1, 256 tokens" --label "stage 2, 1024 tokens" --label "stage 3, 4160 tokens" \
#     --label "stage 4, 4160 tokens, synthetic 256-4160" \
#     --title "podkv-long: 256 1024 4160 4160 token stages, 65536 tokens per step" --out loss.png

# Stage 5 (H200, 2026-12-03, session 15): the shipped stage-4 model (models/podkv-long of commit
# d5a0a6d, bf16, sha256 ccd8d41d...) continued with one more 4160-token stage aimed at long
# distances: every synthetic sample of a random length from 3072 to 4160 tokens (in stage 4 they
# ran from 256, so few put the answer 3000+ tokens before the question, where stage 4's misses
# were), lr 1e-4 -> 1e-5, 150 s (1803 steps), seed 6. Here stage5-seq4160.txt and
# "stage": "stage5-seq4160" in train_log.jsonl, its steps counted on from stage 4's 5493.
#   INIT=out/base SEQS=4160 BUDGETS=150 TOKENS_PER_S=750000 LRS=1e-4 WARMUPS=50 SEED=6 SYNTHETIC_MIN_LENS=3072 \
#     EVAL_SAMPLES=10 THREADS=16 scripts/train_long_model.sh build-cuda out/dense
# scripts/train_long_model.sh build-cuda out/dense (2026-12-03T19:54:20Z, commit d5a0a6d)
# data: /work/main/.data/long: train.tokens 37114507 tokens, heldout.tokens 994076 tokens
build-cuda/podkv train --init out/base --tokenizer /work/main/models/podkv-ref --data /work/main/.data/long/train.tokens /work/main/.data/long/heldout.tokens --val-fraction 0.026085370322 --seq-len 4160 --batch 15 --grad-accum 1 --steps 1803 --lr 1e-4 --min-lr 1e-05 --warmup 50 --weight-decay 0.1 --beta1 0.9 --beta2 0.95 --clip 1.0 --seed 6 --synthetic passkey-eval\,kv\,niah --synthetic-fraction 0.5 --passkey-digits 5 --kv-pairs 0 --eval-every 200 --eval-batches 4 --accuracy-samples 64 --save-every 0 --device cuda --precision bf16 --peak-tflops 790 -t 16 --out out/dense/stage1-seq4160 --synthetic-min-len 3072 
# the acceptance grids of ../acceptance (acceptance/*.cmd), and ../acceptance/full-context:
build-cuda/podkv eval -m out/dense/stage1-seq4160 --task passkey --kv dense --lengths 512\,1024\,2048\,4096 --depths 0\,10\,20\,30\,40\,50\,60\,70\,80\,90\,100 --samples 10 --seed 0 --device cuda --cuda-weights f32 -t 16 --no-progress --out out/dense/eval/passkey 
build-cuda/podkv eval -m out/dense/stage1-seq4160 --task niah --kv dense --data /work/main/.data/long/heldout.txt --lengths 512\,1024\,2048\,4096 --depths 0\,10\,20\,30\,40\,50\,60\,70\,80\,90\,100 --samples 10 --seed 0 --device cuda --cuda-weights f32 -t 16 --no-progress --out out/dense/eval/niah 
# Then models/podkv-long = scripts/to_bf16.py of out/dense/stage1-seq4160 (sha256 94bb6df4...).
# loss.png over the five stages, drawn here from train_log.jsonl split by its "stage" field:
#   build/podkv plot-loss logs/stage1-seq256.jsonl logs/stage2-seq1024.jsonl logs/stage3-seq4160.jsonl \
#     logs/stage4-seq4160.jsonl logs/stage5-seq4160.jsonl \
#     --label "stage 1, 256 tokens" --label "stage 2, 1024 tokens" --label "stage 3, 4160 tokens" \
#     --label "stage 4, 4160 tokens, synthetic 256-4160" --label "stage 5, 4160 tokens, synthetic 3072-4160" \
#     --title "podkv-long: 256 1024 4160 4160 4160 token stages, 65536 tokens per step" --out loss.png
