# scripts/pod_long_model.sh build-cuda out/pod3 (2026-12-03T20:14:09Z); trained model out/base5
build-cuda/podkv adapt -m out/base5 --pod-config out/pod3/pod.json --data /work/main/.data/long/train.tokens /work/main/.data/long/heldout.tokens --val-fraction 0.026085370322 --seq-len 4160 --batch 15 --steps 1500 --lr 2e-4 --min-lr 2e-05 --warmup 40 --synthetic passkey-eval\,kv\,niah --synthetic-fraction 0.5 --synthetic-min-len 2048 --eval-every 500 --accuracy-samples 256 --device cuda --precision bf16 --peak-tflops 790 -t 16 --out out/pod3/adapt 
python3 /work/main/scripts/to_bf16.py out/base5/model.safetensors out/pod3/podkv-long/model.safetensors 
python3 /work/main/scripts/to_bf16.py out/pod3/adapt/model.safetensors out/pod3/podkv-long-pod/model.safetensors 
