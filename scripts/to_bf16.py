#!/usr/bin/env python3
"""Rewrites a float32 safetensors file as bfloat16 (round to nearest even), with
the standard library only. Usage: to_bf16.py IN.safetensors OUT.safetensors"""
import json
import struct
import sys
from array import array


def main(src, dst):
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out_header, chunks, offset = {}, [], 0
    for name, info in sorted((k, v) for k, v in header.items() if k != "__metadata__"):
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        if info["dtype"] == "F32":
            words = array("I")
            words.frombytes(raw)
            halves = array("H", ((w + 0x7FFF + ((w >> 16) & 1)) >> 16 for w in words))
            raw = halves.tobytes()
            info = dict(info, dtype="BF16")
        out_header[name] = dict(info, data_offsets=[offset, offset + len(raw)])
        chunks.append(raw)
        offset += len(raw)
    if "__metadata__" in header:
        out_header["__metadata__"] = header["__metadata__"]
    blob = json.dumps(out_header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for c in chunks:
            f.write(c)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
