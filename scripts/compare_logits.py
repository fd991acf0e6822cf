#!/usr/bin/env python3
"""Compares the `logits` of podkv logits outputs: CANDIDATE against each REFERENCE.

Prints one line per reference: max |a - b| / max |b| and top-1 agreement; exits 1
when the error is above --tol or the agreement below --top1.
Usage: compare_logits.py CANDIDATE REFERENCE [REFERENCE ...] [--tol T] [--top1 F]
A reference may be transformers' reference.safetensors (logits_f32ref, else logits).
"""
import argparse
import sys

import numpy as np
from safetensors.numpy import load_file


def logits_of(path):
    t = load_file(path)
    for name in ("logits_f32ref", "logits"):
        if name in t:
            return t[name].astype(np.float64)
    sys.exit(f"{path}: no logits tensor")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("candidate")
    p.add_argument("references", nargs="+")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--top1", type=float, default=0.99)
    a = p.parse_args()
    got = logits_of(a.candidate)
    ok = True
    for ref_path in a.references:
        ref = logits_of(ref_path)
        if ref.shape != got.shape:
            print(f"  vs {ref_path}: shape {got.shape} != {ref.shape}  FAIL")
            ok = False
            continue
        err = np.abs(got - ref).max() / np.abs(ref).max()
        top1 = float((got.argmax(-1) == ref.argmax(-1)).mean())
        good = err <= a.tol and top1 >= a.top1
        ok = ok and good
        print(f"  vs {ref_path}: max rel err {err:.3e} (tol {a.tol:g}), top-1 {top1:.4f}  {'OK' if good else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
