#!/usr/bin/env python3
"""Checks that moving CUDA code between files left every kernel's device code as it was, without a GPU.

    nvcc -std=c++17 -arch=sm_90 --expt-relaxed-constexpr -Isrc -ptx src/cuda/a.cu -o before.ptx   # old tree
    nvcc ... -ptx src/cuda/a.cu -o a.ptx; nvcc ... -ptx src/cuda/a_part.cu -o b.ptx                # new tree
    python3 docs/gpu-bench/kernel-tuning/ptx_same.py before.ptx -- a.ptx b.ptx

Each side's kernels (.entry) and device functions (.func) are matched by name, less the anonymous
namespace's per-file part (_GLOBAL__N__<hash>_<n>_<file>_cu_<hash>), and their bodies compared after
the renamings that a move changes but the code does not: basic-block labels ($L__BB<function>_<n>)
and local stacks (__local_depot<function>), numbered by the function's place in its file, and
mangled symbols in a body (shared variables of an inlined helper carry its namespace), numbered by
first use. Prints what differs; exits 1 if a function is missing, added or changed.
"""
import re
import sys

ANON = re.compile(r"\d+_GLOBAL__N__[0-9a-f]+_\d+_\w+?_cu_[0-9a-f]{8}")
HEAD = re.compile(r"^(?:\.visible |\.weak )?\.(entry|func)\s+(?:\([^)]*\)\s*)?(\S+?)\(", re.M)


def functions(path):
    """{normalised name: normalised body} of one PTX file."""
    text = open(path).read()
    starts = [m.start() for m in HEAD.finditer(text)]
    out = {}
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        chunk = text[start:end]
        # The function ends at its closing brace at column 0; what follows is module-level.
        close = chunk.find("\n}\n")
        body = chunk[: close + 3] if close >= 0 else chunk
        name = ANON.sub("ANON", HEAD.match(body).group(2))
        body = ANON.sub("ANON", body)
        body = re.sub(r"\$L__BB\d+_", "$L__BB_", body)
        body = re.sub(r"__local_depot\d+", "__local_depot", body)
        symbols = {}
        body = re.sub(r"\b_Z\w+", lambda m: symbols.setdefault(m.group(0), f"SYM{len(symbols)}"), body)
        if name in out:
            sys.exit(f"ptx_same: {path}: {name} twice")
        out[name] = body
    return out


def main():
    args = sys.argv[1:]
    if "--" not in args or args.index("--") == 0 or args.index("--") == len(args) - 1:
        sys.exit("usage: ptx_same.py BEFORE.ptx [...] -- AFTER.ptx [...]")
    cut = args.index("--")
    sides = []
    for paths in (args[:cut], args[cut + 1 :]):
        merged = {}
        for path in paths:
            for name, body in functions(path).items():
                if name in merged:
                    sys.exit(f"ptx_same: {name} in two files of one side")
                merged[name] = body
        sides.append(merged)
    before, after = sides
    bad = 0
    for name in sorted(set(before) | set(after)):
        if name not in after:
            print(f"missing after: {name}")
            bad += 1
        elif name not in before:
            print(f"added after:   {name}")
            bad += 1
        elif before[name] != after[name]:
            print(f"changed:       {name}")
            bad += 1
    print(f"{len(before)} functions before, {len(after)} after, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
