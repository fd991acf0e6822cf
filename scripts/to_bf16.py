#!/usr/bin/env python3
"""Copies a Hugging Face model directory with its weights rounded to bfloat16.

    python3 scripts/to_bf16.py SRC_DIR DST_DIR

Writes DST_DIR/model.safetensors (every floating tensor as BF16, rounded to
nearest even by torch; the names and shapes kept), config.json with
torch_dtype "bfloat16", and copies tokenizer.json and pod.json when SRC_DIR
has them. Nothing else (a trainer's optimizer state) is copied. Needs torch
and safetensors (the GPU machine's python3 has both).
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: to_bf16.py SRC_DIR DST_DIR")
    src, dst = sys.argv[1], sys.argv[2]
    weights = os.path.join(src, "model.safetensors")
    if not os.path.isfile(weights):
        sys.exit(f"error: {weights}: no such file")
    os.makedirs(dst, exist_ok=True)
    tensors = load_file(weights)
    out = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    config["torch_dtype"] = "bfloat16"
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    for name in ("tokenizer.json", "pod.json"):
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    params = sum(v.numel() for v in out.values())
    print(f"{dst}: {len(out)} tensors, {params / 1e6:.2f}M parameters in bf16", file=sys.stderr)


if __name__ == "__main__":
    main()
