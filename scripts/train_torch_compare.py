#!/usr/bin/env python3
"""PyTorch's side of scripts/train_torch_compare.sh: the same run as podkv's,
from the same initial weights, on the same batches, with podkv's optimiser.

  init CONFIG_DIR OUT_DIR --seed S
      transformers' LlamaForCausalLM from CONFIG_DIR/config.json, initialised
      with torch.manual_seed(S) (normal(0, initializer_range) matrices, norms 1),
      float32, saved with save_pretrained (safetensors; a tied LM head is not
      stored) for `podkv train --init OUT_DIR`.
  train INIT_DIR DUMP --log OUT.jsonl [--steps N --lr ... --clip ...]
      replays DUMP (`podkv train --dump-batches`, layout in src/train/batch_dump.h)
      through LlamaForCausalLM on the GPU: SDPA attention, float32 master
      weights, bf16 autocast, torch.optim.AdamW (fused). podkv's semantics
      (src/train/trainer.cpp, src/train/adamw.cpp):
        loss   cross-entropy summed over the step's counted targets (target -1:
               none), divided by their count over all micro-batches of the step;
               each micro-batch's gradient is accumulated;
        clip   global L2 norm of all gradients; scaled by clip / norm only when
               norm > clip (no 1e-6 as in clip_grad_norm_);
        lr     linear warmup lr * (step + 1) / warmup for step < warmup, then a
               cosine from lr to min_lr at --steps (step 0-based);
        AdamW  p *= 1 - lr * wd on matrices only (2-D tensors, the embedding
               and tied LM head included; not norms or biases), then Adam with
               bias correction and eps added to sqrt(v_hat).
      Writes one JSON line per step (step, loss, lr, grad_norm, tokens_per_s,
      elapsed_s, as podkv's train log) and prints a final JSON line with
      tokens/s over the steps after the first.
"""
import argparse
import inspect
import json
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

DUMP_MAGIC = b"PODKVBAT"
DUMP_HEADER = struct.Struct("<8sIIQQQQ")  # magic, version, grad_accum, batch, seq, first_step, steps


def learning_rate(step, total, warmup, lr, min_lr):
    """podkv's train::learning_rate (src/train/adamw.cpp); step is 0-based."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def read_dump(path):
    """The micro-batches of a podkv batch dump: int32 [steps, grad_accum, 2 (tokens, targets), batch, seq]."""
    with open(path, "rb") as f:
        magic, version, accum, batch, seq, first_step, steps = DUMP_HEADER.unpack(f.read(DUMP_HEADER.size))
    if magic != DUMP_MAGIC or version != 1:
        raise SystemExit(f"{path}: not a podkv batch dump (version 1)")
    if first_step != 0:
        raise SystemExit(f"{path}: starts at step {first_step} (a resumed run); replay needs the run from step 0")
    size = DUMP_HEADER.size + steps * accum * 2 * batch * seq * 4
    if os.path.getsize(path) != size:
        raise SystemExit(f"{path}: {os.path.getsize(path)} bytes, the header says {size}")
    return np.memmap(path, dtype="<i4", mode="r", offset=DUMP_HEADER.size, shape=(steps, accum, 2, batch, seq))


def cmd_init(a):
    config = LlamaConfig.from_pretrained(a.config_dir)
    torch.manual_seed(a.seed)
    model = LlamaForCausalLM(config).float()
    save_kw = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:  # safetensors is v5's only format
        save_kw["safe_serialization"] = True
    model.save_pretrained(a.out_dir, **save_kw)
    if not os.path.exists(os.path.join(a.out_dir, "model.safetensors")):
        raise SystemExit(f"{a.out_dir}: save_pretrained wrote no model.safetensors ({os.listdir(a.out_dir)})")
    count = sum(p.numel() for p in model.parameters())
    print(f"wrote {a.out_dir}: {count / 1e6:.2f}M parameters, float32, seed {a.seed}, "
          f"tie_word_embeddings {config.tie_word_embeddings}")


def cmd_train(a):
    batches = read_dump(a.dump)
    dump_steps, accum, _, batch, seq = batches.shape
    steps = a.steps if a.steps is not None else dump_steps
    if steps > dump_steps:
        raise SystemExit(f"--steps {steps}: the dump holds {dump_steps} steps")
    min_lr = a.min_lr if a.min_lr is not None else a.lr / 10
    warmup = a.warmup if a.warmup is not None else min(100, steps // 10)

    device = "cuda"
    model = LlamaForCausalLM.from_pretrained(a.init_dir, dtype=torch.float32, attn_implementation="sdpa").to(device)
    model.train()
    vocab = model.config.vocab_size
    named = list(model.named_parameters())  # a tied LM head is the embedding, listed once
    params = [p for _, p in named]
    decay = [p for _, p in named if p.dim() == 2]
    no_decay = [p for _, p in named if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps, fused=True)

    log = open(a.log, "w")
    tokens_per_step = accum * batch * seq
    start = time.perf_counter()
    timed_from = None  # elapsed after the first (warm-up) step
    for step in range(steps):
        s0 = time.perf_counter()
        counted = int((batches[step, :, 1] >= 0).sum())
        scale = 1.0 / counted if counted > 0 else 0.0
        opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        for m in range(accum):
            micro = torch.from_numpy(np.array(batches[step, m])).to(device, non_blocking=True).long()
            tokens, targets = micro[0], micro[1]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(input_ids=tokens, use_cache=False).logits
            micro_loss = F.cross_entropy(logits.float().view(-1, vocab), targets.reshape(-1), ignore_index=-1,
                                         reduction="sum")
            (micro_loss * scale).backward()
            loss_sum += micro_loss.detach().double()
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).double()).item()
        if a.clip > 0 and norm > a.clip:
            torch._foreach_mul_(grads, a.clip / norm)
        lr = learning_rate(step, steps, warmup, a.lr, min_lr)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        loss = loss_sum.item() * scale  # also waits for the step's kernels
        torch.cuda.synchronize()
        now = time.perf_counter()
        elapsed = now - start
        if step == 0:
            timed_from = elapsed
        if not math.isfinite(loss) or not math.isfinite(norm):
            raise SystemExit(f"training diverged at step {step + 1} (loss {loss}, gradient norm {norm})")
        log.write(json.dumps({"step": step + 1, "loss": loss, "lr": lr, "grad_norm": norm,
                              "tokens_per_s": tokens_per_step / (now - s0), "elapsed_s": elapsed}) + "\n")
        log.flush()
    log.close()
    timed_steps = steps - 1
    tokens_per_s = tokens_per_step * timed_steps / (elapsed - timed_from) if timed_steps > 0 else float("nan")
    print(json.dumps({"impl": "torch-sdpa-bf16-autocast", "steps": steps, "batch": batch, "seq": seq,
                      "grad_accum": accum, "final_loss": loss, "tokens_per_s": tokens_per_s,
                      "timed_steps": timed_steps, "torch": torch.__version__,
                      "transformers": __import__("transformers").__version__}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="random initial weights as a Hugging Face directory")
    p.add_argument("config_dir")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(run=cmd_init)
    p = sub.add_parser("train", help="replay a podkv batch dump with podkv's optimiser")
    p.add_argument("init_dir")
    p.add_argument("dump")
    p.add_argument("--log", required=True)
    p.add_argument("--steps", type=int, help="optimiser steps, the end of the cosine (default: the dump's)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, help="default lr / 10")
    p.add_argument("--warmup", type=int, help="default min(100, steps / 10)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--clip", type=float, default=1.0, help="global-norm clip (0 = off)")
    p.set_defaults(run=cmd_train)
    a = ap.parse_args()
    a.run(a)


if __name__ == "__main__":
    main()
