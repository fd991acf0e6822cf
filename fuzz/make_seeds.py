#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses (fuzz/corpus/<harness>/) from
the repository's real files: the reference model's config, pod.json, norm
weights and tokenizer, the fixture models' configs and sharded index, the
tokenizer fixtures and their test texts. Deterministic; run from anywhere:

    python3 fuzz/make_seeds.py
"""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def path(*parts):
    return os.path.join(ROOT, *parts)


SEEDS = {}  # harness -> {file name: bytes}, written at the end


def put(harness, name, data):
    SEEDS.setdefault(harness, {})[name] = data.encode() if isinstance(data, str) else data


def write_seeds():
    # Only the harnesses this script seeds are rewritten. Their regression_* inputs (ones that once
    # crashed a harness) stay, and so do the hand-written seeds of harnesses it does not seed
    # (fuzz_openai_request, fuzz_prompts_file).
    for harness, files in SEEDS.items():
        d = os.path.join(OUT, harness)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if not f.startswith("regression_"):
                os.remove(os.path.join(d, f))
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


def read_safetensors(p):
    with open(p, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def safetensors_bytes(tensors, metadata=None, pad_to=8):
    """tensors: [(name, dtype, shape, bytes)]; header padded with spaces to `pad_to` (1: to an odd length)."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad_to == 1 and len(text) % 2 == 0:
        text += b" "  # an odd header length: the data section starts unaligned
    while pad_to > 1 and (8 + len(text)) % pad_to:
        text += b" "
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    header, data = read_safetensors(path("models", "podkv-ref", "model.safetensors"))
    norms = [(k, v) for k, v in sorted(header.items()) if k.endswith("norm.weight")][:3]
    real = [(k, v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in norms]
    put("fuzz_safetensors", "reference_norms.safetensors", safetensors_bytes(real, {"format": "pt"}))
    # The same values as F16 and BF16 (top halves of the f32 words), and an odd header length (unaligned data).
    f32 = real[0][3]
    bf16 = b"".join(f32[i + 2:i + 4] for i in range(0, len(f32), 4))
    put("fuzz_safetensors", "bf16_odd_header.safetensors",
        safetensors_bytes([("w", "BF16", [len(bf16) // 2], bf16)], {"odd": "x"}, pad_to=1))
    put("fuzz_safetensors", "mixed.safetensors", safetensors_bytes([
        ("input_ids", "I64", [1, 3], struct.pack("<3q", 1, 2, 3)),
        ("ids32", "I32", [2], struct.pack("<2i", 7, 8)),
        ("half", "F16", [2, 2], struct.pack("<4H", 0x3C00, 0xC000, 0x7BFF, 0x0001)),
        ("empty", "F32", [0, 4], b""),
    ]))
    index = open(path("tests", "fixtures", "models", "llama_sharded", "model.safetensors.index.json")).read()
    put("fuzz_safetensors_index", "llama_sharded.index.json", index)
    put("fuzz_safetensors_index", "two_shards.index.json", json.dumps(
        {"metadata": {"total_size": 12},
         "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))


# ---- GGUF ----
U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(t, v):
    if t == U32:
        return struct.pack("<I", v)
    if t == I32:
        return struct.pack("<i", v)
    if t == F32:
        return struct.pack("<f", v)
    if t == BOOL:
        return struct.pack("<?", v)
    if t == STRING:
        return gguf_string(v)
    if t == U64:
        return struct.pack("<Q", v)
    elem, items = v
    return struct.pack("<IQ", elem, len(items)) + b"".join(gguf_value(elem, x) for x in items)


def gguf_bytes(metadata, tensors, alignment=32):
    """metadata: [(key, type, value)]; tensors: [(name, ggml dims fastest first, ggml type, bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, t, v in metadata:
        out += gguf_string(key) + struct.pack("<I", t) + gguf_value(t, v)
    offset, blobs = 0, b""
    for name, dims, ggml_type, raw in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
        pad = (-len(raw)) % alignment
        blobs += raw + b"\0" * pad
        offset += len(raw) + pad
    out += b"\0" * ((-len(out)) % alignment)
    return out + blobs


def gguf_seeds():
    tok = json.load(open(path("models", "podkv-ref", "tokenizer.json")))
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    cfg = json.load(open(path("models", "podkv-ref", "config.json")))
    hidden = 8
    llama = [
        ("general.architecture", STRING, "llama"),
        ("general.alignment", U32, 32),
        ("llama.embedding_length", U32, hidden),
        ("llama.block_count", U32, 1),
        ("llama.feed_forward_length", U32, 16),
        ("llama.attention.head_count", U32, 2),
        ("llama.attention.head_count_kv", U32, 1),
        ("llama.context_length", U32, cfg["max_position_embeddings"]),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("llama.rope.freq_base", F32, 10000.0),
    ]
    gpt2 = [
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.pre", STRING, "llama-bpe"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.token_type", ARRAY, (I32, [1] * len(tokens))),
        ("tokenizer.ggml.merges", ARRAY, (STRING, merges)),
        ("tokenizer.ggml.bos_token_id", U32, 0),
        ("tokenizer.ggml.eos_token_id", U32, 1),
    ]
    norm = struct.pack("<%df" % hidden, *([1.0] * hidden))
    tensors = [("output_norm.weight", [hidden], 0, norm),
               ("token_embd.weight", [hidden, 4], 1, b"\0\x3c" * (hidden * 4))]
    put("fuzz_gguf", "reference_vocab_gpt2.gguf", gguf_bytes(llama + gpt2, tensors))
    pieces = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["\u2581the", "\u2581a", "he", "ll", "o"]
    spm = [
        ("tokenizer.ggml.model", STRING, "llama"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, pieces)),
        ("tokenizer.ggml.scores", ARRAY, (F32, [0.0] * 259 + [-1.0, -2.0, -3.0, -4.0, -5.0])),
        ("tokenizer.ggml.token_type", ARRAY, (I32, [2, 3, 3] + [6] * 256 + [1] * 5)),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
    ]
    q8 = struct.pack("<H", 0x3C00) + bytes(range(32))
    put("fuzz_gguf", "llama_vocab_q8.gguf", gguf_bytes(llama + spm, [("blk.0.ffn_up.weight", [32, 1], 8, q8)]))


def tokenizer_seeds():
    put("fuzz_tokenizer_json", "reference.json", open(path("models", "podkv-ref", "tokenizer.json"), "rb").read())
    put("fuzz_tokenizer_json", "tiny_bpe.json", json.dumps({
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<unk>": 3}, "merges": ["a b"],
                  "unk_token": "<unk>", "byte_fallback": False},
        "added_tokens": [{"id": 4, "content": "<s>", "special": True}],
        "normalizer": None, "pre_tokenizer": None, "decoder": None, "post_processor": None}))
    put("fuzz_sentencepiece", "spm_bpe.model",
        open(path("tests", "fixtures", "tokenizers", "spm_bpe", "tokenizer.model"), "rb").read())
    for fixture, first in (("bpe_llama3", 0x00), ("spm_bpe", 0x01)):
        with open(path("tests", "fixtures", "tokenizers", fixture, "cases.jsonl")) as f:
            cases = [json.loads(line) for line in f if line.strip()]
        for i, case in enumerate(cases[:12]):
            put("fuzz_tokenizer_encode", "%s_%02d" % (fixture, i), bytes([first]) + case["text"].encode())
        put("fuzz_tokenizer_encode", "%s_decode" % fixture,
            bytes([first | 0x10]) + b"".join(struct.pack("<H", i) for i in range(0, 600, 7)))


def config_seeds():
    configs = [path("models", "podkv-ref", "config.json"), path("configs", "llama-3-8b-32k", "config.json")]
    fixtures = path("tests", "fixtures", "models")
    configs += [os.path.join(fixtures, d, "config.json") for d in sorted(os.listdir(fixtures))]
    for p in configs:
        if os.path.exists(p):
            put("fuzz_config", os.path.basename(os.path.dirname(p)) + ".json", open(p, "rb").read())


def pod_config_seeds():
    # First two bytes: layers - 1 and KV heads - 1 of the model the file is checked against.
    ref = open(path("models", "podkv-ref", "pod.json"), "rb").read()
    put("fuzz_pod_config", "reference_pod.json", bytes([5, 3]) + ref)
    put("fuzz_pod_config", "uniform.json", bytes([3, 1]) + json.dumps(
        {"sink_tokens": 4, "recent_tokens": 16, "anchors": [[0, 2], [0]], "tau": 0.9, "share_values": True}).encode())


def eval_progress_seeds():
    window = {"item": 0, "policy": "pod", "options": "sink=16,recent=128", "prompt_tokens": 1024, "kv_length": 1024,
              "kv_bytes": 1 << 20, "kv_bytes_in_use": 1 << 19, "seconds": 0.5, "scored": 512, "nll_sum": 1800.25,
              "top1_agree": 480, "kl_sum": 3.5}
    grid = {"item": 3, "policy": "dense", "options": "", "prompt_tokens": 256, "kv_length": 262, "kv_bytes": 4096,
            "kv_bytes_in_use": 4096, "seconds": 0.1, "correct": True, "generated": " 12345"}
    put("fuzz_eval_progress", "records.jsonl", json.dumps(window) + "\n" + json.dumps(grid) + "\n")
    put("fuzz_eval_progress", "cut_short.jsonl", json.dumps(grid) + "\n" + json.dumps(window)[:40])


def llama2c_seeds():
    # Tiny checkpoints: dim 4, hidden 6, 1 layer, 2 heads (head_dim 2), 1 KV head, vocab 4, seq_len 3.
    dim, hidden, layers, heads, kv, vocab, seq = 4, 6, 1, 2, 1, 4, 3
    hd = dim // heads
    sizes = [vocab * dim, layers * dim, layers * dim * dim, layers * dim * kv * hd, layers * dim * kv * hd,
             layers * dim * dim, layers * dim, layers * dim * hidden, layers * hidden * dim, layers * dim * hidden,
             dim, seq * hd]
    floats = lambda n, k: struct.pack("<%df" % n, *[((i * 7 + k) % 11 - 5) / 8 for i in range(n)])
    legacy = [floats(n, k) for k, n in enumerate(sizes)]
    header = struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq)
    put("fuzz_llama2c", "legacy_shared.bin", header + b"".join(legacy))
    put("fuzz_llama2c", "legacy_separate.bin",
        struct.pack("<7i", dim, hidden, layers, heads, kv, -vocab, seq) + b"".join(legacy) + legacy[0])
    v1 = (struct.pack("<Ii", 0x616B3432, 1) + header + b"\x00").ljust(256, b"\x00")
    put("fuzz_llama2c", "v1_separate.bin", v1 + b"".join(legacy[i] for i in (1, 6, 10, 0, 2, 3, 4, 5, 7, 8, 9)) + legacy[0])
    tok = struct.pack("<i", 7)
    for score, text in ((0.0, b"<unk>"), (0.0, b"\n<s>\n"), (0.0, b"<0x41>"), (-1.0, b" a")):
        tok += struct.pack("<fi", score, len(text)) + text
    put("fuzz_llama2c", "tokenizer.bin", tok)


def token_file_seeds():
    # The layout of src/train/token_file.h: magic, version, id bytes, vocabulary, reserved, fingerprint, count, ids.
    def token_file(ids, vocab, width=None, fingerprint=0x0123456789ABCDEF):
        width = width or (2 if vocab <= 65536 else 4)
        head = b"PODKVTOK" + struct.pack("<IIIIQQ", 1, width, vocab, 0, fingerprint, len(ids))
        return head + struct.pack("<%d%s" % (len(ids), "H" if width == 2 else "I"), *ids)
    ids = [220, 1004, 5, 0, 1006, 1001, 17, 999]
    put("fuzz_token_file", "uint16.tokens", token_file(ids, 1007))
    put("fuzz_token_file", "uint32.tokens", token_file([0, 65535, 65536, 99999], 100000))
    put("fuzz_token_file", "truncated.tokens", token_file(ids, 1007)[:-3])
    put("fuzz_token_file", "header_only.tokens", token_file([], 1007))


if __name__ == "__main__":
    safetensors_seeds()
    gguf_seeds()
    tokenizer_seeds()
    llama2c_seeds()
    config_seeds()
    pod_config_seeds()
    eval_progress_seeds()
    token_file_seeds()
    write_seeds()
    for h in sorted(os.listdir(OUT)):
        files = os.listdir(os.path.join(OUT, h))
        print("%-24s %2d seeds, %6d bytes" % (h, len(files), sum(os.path.getsize(os.path.join(OUT, h, f)) for f in files)))
