#!/usr/bin/env python3
"""Counts the PTX instructions of a kernel's loops: a static look at a kernel without a GPU.

    nvcc -std=c++17 -arch=sm_90 --expt-relaxed-constexpr -Isrc -ptx src/cuda/attention_decode.cu -o dec.ptx
    python3 docs/gpu-bench/kernel-tuning/ptx_loops.py dec.ptx 'decode_mma_kernelILi128ELi3ELb0ELb1' [LABEL]

For the first entry whose mangled name matches the regular expression, each loop (a branch back to
an earlier label) is printed with its instruction count and its mma, cp.async, division and
local-memory instructions, largest first; with LABEL, that loop's "hot" count too (its basic blocks
less those that zero shared memory, rescale O (16 or more float multiplies) or store to global
memory: the rare paths, and an epilogue the compiler may lay out inside the loop's range) and the
hot blocks' opcodes by count. PTX is not SASS (a 32-bit division is one PTX instruction and about a
dozen SASS ones), but two versions of one kernel compare fairly.
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
                region = seq[where[target.group(1)]:i + 1]
                loops.append((target.group(1), [t for k, t in region if k == "ins"], region))
        print(name.group(1))
        for lab, body, region in sorted(loops, key=lambda l: -len(l[1]))[:8]:
            count = lambda f: sum(1 for x in body if f(x))
            print("  loop %s: %d instructions, mma %d, cp.async %d, div %d, local %d" % (
                lab, len(body), count(lambda x: "mma" in x), count(lambda x: re.search(r"cp\.async\.c[ag]", x)),
                count(lambda x: re.search(r"\bdiv\.", x)), count(lambda x: ".local" in x)))
            if lab == label:
                blocks, cur = [], []
                for kind, x in region:  # basic blocks: from a label, or after a branch
                    if kind == "label" or re.search(r"\bbra\b", x):
                        if kind == "ins":
                            cur.append(x)
                        blocks.append(cur)
                        cur = []
                    else:
                        cur.append(x)
                blocks.append(cur)
                cold = lambda b: any("st.shared.v4" in x or "st.global" in x for x in b) or \
                    sum("mul.f32" in x for x in b) >= 16
                hot = [x for b in blocks if not cold(b) for x in b]
                print("    hot: %d instructions" % len(hot))
                ops = {}
                for x in hot:
                    op = x.split()[1] if x.startswith("@") else x.split()[0]
                    ops[op] = ops.get(op, 0) + 1
                for op, n in sorted(ops.items(), key=lambda o: -o[1]):
                    print("    %5d %s" % (n, op))
        return
    sys.exit("no entry matches " + pattern)


if __name__ == "__main__":
    main()
