#!/usr/bin/env python3
"""Training throughput of PyTorch on the same shape as a podkv training run,
for the same-run comparison of scripts/bench_train_gpu.sh.

Builds transformers' LlamaForCausalLM from CONFIG_DIR/config.json, float32
master weights, bf16 autocast, SDPA attention (or eager), fused AdamW
(betas 0.9/0.95, weight decay 0.1), gradient clipping at 1.0, random token
batches of --batch x --seq; times --steps steps after --warmup and prints one
JSON line: tokens/s and model TFLOP/s counted as podkv counts them
(6 x matrix parameters incl. the LM head + 6 x layers x heads x head_dim x seq).
  python3 scripts/train_torch_ref.py configs/podkv-long-23m --batch 16 --seq 4096 [--compile] [--attn eager]
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()

    config = LlamaConfig.from_pretrained(a.config_dir)
    config._attn_implementation = a.attn
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).cuda()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    step_fn = model
    if a.compile:
        step_fn = torch.compile(model)

    def step():
        ids = torch.randint(0, config.vocab_size, (a.batch, a.seq), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = step_fn(input_ids=ids, labels=ids)  # transformers shifts the labels itself
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / a.steps
    tokens = a.batch * a.seq
    matrices = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n)
    if config.tie_word_embeddings:
        matrices += model.model.embed_tokens.weight.numel()
    flops_per_token = 6 * matrices + 6 * config.num_hidden_layers * config.num_attention_heads * \
        (config.hidden_size // config.num_attention_heads if getattr(config, "head_dim", None) is None else config.head_dim) * a.seq
    impl = "torch-" + a.attn + ("-compile" if a.compile else "")
    print(json.dumps({"impl": impl, "batch": a.batch, "seq": a.seq, "tokens_per_s": tokens / seconds,
                      "model_tflops": tokens / seconds * flops_per_token / 1e12, "step_s": seconds}))


if __name__ == "__main__":
    main()
