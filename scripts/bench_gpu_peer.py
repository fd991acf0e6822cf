#!/usr/bin/env python3
"""The peer of `podkv bench --device cuda --random-weights` on the GPU machine:
Hugging Face transformers (eager and SDPA attention) on the same config with
random bf16 weights, timing prefill and greedy-free decode steps the same way
(tokens/s of the forward alone, the GPU synchronised before each clock read).

  python3 scripts/bench_gpu_peer.py -m configs/llama-3-8b-32k --out peer.json \
      [--prefill 4096,32768] [--decode 4096:1,32768:1,8192:8] [--steps 32] [--attention 32768]

--attention N,...: instead, PyTorch's scaled_dot_product_attention alone on one layer's causal
prompt of N tokens (the config's heads, KV heads and head_dim, bf16, GQA as transformers' SDPA
path passes it), under each backend PyTorch has for it: the bar for podkv's prefill attention.

A test that runs out of GPU memory is reported as "oom", not skipped silently.
"""
import argparse
import contextlib
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def sync_time():
    torch.cuda.synchronize()
    return time.perf_counter()


def make_model(config_dir, attn):
    config = LlamaConfig.from_pretrained(config_dir)
    config._attn_implementation = attn
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    return model, config


@torch.inference_mode()
def prefill(model, vocab, n, reps):
    ids = torch.randint(0, vocab, (1, n), device="cuda")
    model(ids, use_cache=False, logits_to_keep=1)  # warm-up
    best = 1e30
    for _ in range(reps):
        t0 = sync_time()
        model(ids, use_cache=False, logits_to_keep=1)
        best = min(best, sync_time() - t0)
    return n / best


@torch.inference_mode()
def decode(model, vocab, depth, batch, steps):
    ids = torch.randint(0, vocab, (batch, depth + 1), device="cuda")
    out = model(ids, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    step = torch.randint(0, vocab, (batch, 1), device="cuda")
    out = model(step, past_key_values=cache, use_cache=True)  # warm-up step
    cache = out.past_key_values
    t0 = sync_time()
    for _ in range(steps):
        out = model(step, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
    return batch * steps / (sync_time() - t0)


@torch.inference_mode()
def attention_alone(config, n, reps=5):
    """Rows {backend, ms per layer, TFLOP/s of causal attention} for one layer's prompt of n tokens."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    h, kv = config.num_attention_heads, config.num_key_value_heads
    d = getattr(config, "head_dim", None) or config.hidden_size // h
    torch.manual_seed(0)
    q = torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, kv, n, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, kv, n, d, device="cuda", dtype=torch.bfloat16)
    flops = 2.0 * n * n * d * h  # Q K^T and P V, 2 flops a product each, half the pairs (causal)
    rows = []
    backends = [("default", None), ("flash", SDPBackend.FLASH_ATTENTION),
                ("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)]
    for name, backend in backends:
        row = {"impl": "torch-sdpa-" + name, "test": f"attention {n} causal", "heads": h, "kv_heads": kv, "head_dim": d}
        try:
            with sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext():
                run = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != h)
                run()
                best = 1e30
                for _ in range(reps):
                    t0 = sync_time()
                    run()
                    best = min(best, sync_time() - t0)
            row["ms_per_layer"] = best * 1e3
            row["ms_all_layers"] = best * 1e3 * config.num_hidden_layers
            row["tflops"] = flops / best / 1e12
        except (RuntimeError, torch.OutOfMemoryError) as e:
            row["error"] = str(e).splitlines()[0][:120]
        torch.cuda.empty_cache()
        print(row, flush=True)
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True, help="directory with config.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--prefill", default="4096,32768")
    ap.add_argument("--decode", default="4096:1,32768:1", help="depth:batch pairs")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--attn", default="sdpa,eager")
    ap.add_argument("--attention", default="", help="prompt lengths: SDPA alone on one layer (no model)")
    args = ap.parse_args()
    results = []
    if args.attention:  # SDPA alone, instead of the models
        config = LlamaConfig.from_pretrained(args.model)
        for n in [int(x) for x in args.attention.split(",") if x]:
            results += attention_alone(config, n)
    for attn in [] if args.attention else args.attn.split(","):
        model, config = make_model(args.model, attn)
        for n in [int(x) for x in args.prefill.split(",") if x]:
            row = {"impl": "transformers-" + attn, "test": f"pp{n}", "batch": 1}
            try:
                row["tokens_per_s"] = prefill(model, config.vocab_size, n, 2)
            except torch.OutOfMemoryError:
                row["tokens_per_s"] = "oom"
            torch.cuda.empty_cache()
            print(row, flush=True)
            results.append(row)
        for pair in [p for p in args.decode.split(",") if p]:
            depth, batch = (int(x) for x in pair.split(":"))
            row = {"impl": "transformers-" + attn, "test": f"tg{args.steps} @ d{depth}", "batch": batch}
            try:
                row["tokens_per_s"] = decode(model, config.vocab_size, depth, batch, args.steps)
            except torch.OutOfMemoryError:
                row["tokens_per_s"] = "oom"
            torch.cuda.empty_cache()
            print(row, flush=True)
            results.append(row)
        del model
        torch.cuda.empty_cache()
    import transformers
    with open(args.out, "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "device": torch.cuda.get_device_name(0), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
