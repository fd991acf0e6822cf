# The adaptation of the second twin (shipped as models/podkv-long-pod from 2026-12-03 until the third, ../third-twin/).
# It starts from the shipped bf16 weights of models/podkv-long (the f32 stage-3
# checkpoint of the training run was not kept). The blocks are the delta-0.3
# blocks of docs/long-model/third-twin/analysis (docs/long-model/analysis then); this run's analyze re-measured them on the
# bf16 weights and found the same anchors ([0,4,5] [0,1,3] [0] [0,6], 33.6% saved).
# The data is .data/long from scripts/make_long_data.sh (models/podkv-ref's tokenizer).
# 2000 steps of 15 x 4160 tokens, lr 2e-4 to 2e-5, every synthetic sample as long
# as its sequence. pod_commands.sh has every command the script ran, adapt.txt
# its output, train_log.jsonl the log (adapt_loss.png: podkv plot-loss of it).
CALIB=.data/calib.txt TRAINED=models/podkv-long DELTAS=0.3 ADAPT_STEPS=2000 ADAPT_EVAL_EVERY=250 \
  ADAPT_ACCURACY_SAMPLES=256 scripts/pod_long_model.sh build-cuda out/long
cp out/long/podkv-long-pod/model.safetensors models/podkv-long-pod/   # sha256 33389e82adaba0c3...; in the history: git show 5b4633b:models/podkv-long-pod/model.safetensors
# The check on the H200 right after (check-passkey.md, check-niah.md): dense, PoD on the
# trained model and PoD on the adapted one, 5 prompts per cell
for t in passkey niah; do h=; [ $t = niah ] && h="--data .data/long/heldout.txt"
  build-cuda/podkv eval -m out/long/podkv-long --task $t $h --kv dense,pod:name=pod-analysed,pod:model=out/long/podkv-long-pod:name=pod-adapted \
    --lengths 1040,2080,4096 --depths 0,10,20,30,40,50,60,70,80,90,100 --samples 5 --seed 0 --device cuda -t 16 --no-progress --out out/check/$t
done
