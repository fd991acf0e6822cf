#!/usr/bin/env python3
"""Counts the PTX instructions of a kernel's loops: a static look at a kernel without a GPU.

    nvcc -std=c++17 -arch=sm_90 --expt-relaxed-constexpr -Isrc -ptx src/cuda/attention_decode.cu -o dec.ptx
    python3 docs/gpu-bench/kernel-tuning/ptx_loops.py dec.ptx 'decode_mma_kernelILi128ELi3ELb0ELb1' [LABEL]

For the first entry whose mangled name matches the regular expression, each loop (a branch back to
an earlier label) is printed with its instruction count and its mma, cp.async, division and
local-memory instructions, largest first; with LABEL, the opcodes of that loop by count. PTX is not
SASS (a 32-bit division is one PTX instruction and about a dozen SASS ones), but two versions of one
kernel compare fairly.
"""
import re
import sys


def main():
    text = open(sys.argv[1]).read()
    pattern, label = sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None
    for function in re.split(r"\n(?=\.visible \.entry|\.entry|\.func)", text):
        name = re.search(r"entry\s+(\S+?)\(", function)
        if not name or not re.search(pattern, name.group(1)):
            continue
        seq = []  # (kind, text): labels and instructions in order
        for line in (l.strip() for l in function.split("\n")):
            if re.match(r"^\$L\w+:", line):
                seq.append(("label", line[:-1]))
            elif line and not line.startswith((".", "//", "{", "}")):
                seq.append(("ins", line))
        where = {text: i for i, (kind, text) in enumerate(seq) if kind == "label"}
        loops = []
        for i, (kind, ins) in enumerate(seq):
            target = re.search(r"bra(?:\.uni)?\s+(\$L\w+);", ins) if kind == "ins" else None
            if target and where.get(target.group(1), i) < i:
                body = [t for k, t in seq[where[target.group(1)]:i + 1] if k == "ins"]
                loops.append((target.group(1), body))
        print(name.group(1))
        for lab, body in sorted(loops, key=lambda l: -len(l[1]))[:8]:
            count = lambda f: sum(1 for x in body if f(x))
            print("  loop %s: %d instructions, mma %d, cp.async %d, div %d, local %d" % (
                lab, len(body), count(lambda x: "mma" in x), count(lambda x: re.search(r"cp\.async\.c[ag]", x)),
                count(lambda x: re.search(r"\bdiv\.", x)), count(lambda x: ".local" in x)))
            if lab == label:
                ops = {}
                for x in body:
                    op = x.split()[1] if x.startswith("@") else x.split()[0]
                    ops[op] = ops.get(op, 0) + 1
                for op, n in sorted(ops.items(), key=lambda o: -o[1]):
                    print("    %5d %s" % (n, op))
        return
    sys.exit("no entry matches " + pattern)


if __name__ == "__main__":
    main()
