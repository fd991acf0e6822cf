"""Opcode counts of a cubin's kernels, on a machine without cuobjdump or nvdisasm.

The low 12 bits of each 128-bit sm_90 instruction are its opcode; their names come from a
`cuobjdump -sass` listing of the same architecture (plain or .gz), e.g. the committed
session34-calls/prefill_producer-counted.sass.gz. Opcodes the listing never shows print as '?'.

  nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a -I src -cubin \
      src/cuda/sm90a/attention_prefill_producer.cu -o /tmp/k.cubin
  python3 sass_hist.py LISTING /tmp/k.cubin 'Li64E' [TOP]

prints, for each kernel whose .text section name matches the regular expression, its instruction
count and its TOP (default 25) most frequent opcodes (session 34: R2UR 46 -> 14 after the counted loop).
"""
import collections
import gzip
import re
import subprocess
import sys


def opcode_names(listing):
    opener = gzip.open if listing.endswith(".gz") else open
    seen = collections.defaultdict(collections.Counter)
    with opener(listing, "rt") as f:
        for line in f:
            m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_]+)[^;]*;\s+/\* 0x([0-9a-f]{16}) \*/", line)
            if m:
                seen[int(m.group(2), 16) & 0xFFF][m.group(1)] += 1
    return {code: names.most_common(1)[0][0] for code, names in seen.items()}


def main():
    listing, cubin, pattern = sys.argv[1], sys.argv[2], sys.argv[3]
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 25
    names = opcode_names(listing)
    sections = subprocess.run(["readelf", "-SW", cubin], capture_output=True, text=True, check=True).stdout
    data = open(cubin, "rb").read()
    for line in sections.splitlines():
        m = re.search(r"\]\s+(\.text\.\S+)\s+\S+\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if not m or not re.search(pattern, m.group(1)):
            continue
        offset, size = int(m.group(2), 16), int(m.group(3), 16)
        counts = collections.Counter(
            names.get(int.from_bytes(data[offset + i:offset + i + 8], "little") & 0xFFF, "?")
            for i in range(0, size, 16))
        print(m.group(1)[6:], size // 16, dict(counts.most_common(top)))


if __name__ == "__main__":
    main()
