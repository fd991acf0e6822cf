#!/usr/bin/env python3
"""Prints a GGUF file's metadata and tensor table as JSON, read with the
standard library alone from the GGUF v3 spec (github.com/ggml-org/ggml,
docs/gguf.md): a reader that shares no code with podkv's, so that a test can
check what podkv convert writes against it.

    python3 tests/gguf_dump.py FILE.gguf

Output: {"version", "metadata": {key: {"type": T, "value": V}}, "tensors":
[{"name", "shape", "type", "offset"}]}; T is the value type's name
("string", "uint32", ..., "array[string]"). Exits 1 with a message on a
malformed file.
"""
import json
import struct
import sys

SCALARS = {0: ("uint8", "<B"), 1: ("int8", "<b"), 2: ("uint16", "<H"), 3: ("int16", "<h"),
           4: ("uint32", "<I"), 5: ("int32", "<i"), 6: ("float32", "<f"), 7: ("bool", "<?"),
           10: ("uint64", "<Q"), 11: ("int64", "<q"), 12: ("float64", "<d")}
STRING, ARRAY = 8, 9


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"truncated at byte {self.pos}")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self):
        n = self.take("<Q")
        if self.pos + n > len(self.data):
            raise ValueError(f"string of {n} bytes at byte {self.pos} runs past the end")
        s = self.data[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def value(self, t):
        if t == STRING:
            return "string", self.string()
        if t in SCALARS:
            name, fmt = SCALARS[t]
            return name, self.take(fmt)
        if t == ARRAY:
            et, n = self.take("<I"), self.take("<Q")
            items = [self.value(et)[1] for _ in range(n)]
            name = "string" if et == STRING else SCALARS[et][0]
            return f"array[{name}]", items
        raise ValueError(f"unknown value type {t}")


def dump(path):
    with open(path, "rb") as f:
        r = Reader(f.read())
    if r.data[:4] != b"GGUF":
        raise ValueError("no GGUF magic")
    r.pos = 4
    version = r.take("<I")
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    metadata = {}
    for _ in range(n_kv):
        key = r.string()
        t, v = r.value(r.take("<I"))
        metadata[key] = {"type": t, "value": v}
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.take("<Q") for _ in range(r.take("<I"))]
        tensors.append({"name": name, "shape": dims, "type": r.take("<I"), "offset": r.take("<Q")})
    return {"version": version, "metadata": metadata, "tensors": tensors}


if __name__ == "__main__":
    try:
        print(json.dumps(dump(sys.argv[1])))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        print(f"gguf_dump: {sys.argv[1]}: {e}", file=sys.stderr)
        sys.exit(1)
