#!/usr/bin/env python3
"""Teacher-forced margins of a passkey answer, to see where a greedy answer slips.

Builds podkv eval's passkey prompt (src/eval/tasks.cpp: intro, the filler
repeated, the needle DEPTH of the way into the filler, the question) of LENGTH
tokens for KEY, runs `podkv logits` over prompt + " KEY." with the given KV
policy, and prints for every answer token the target, the argmax and the
logit of the target against the best other token. Python's standard library only.

  scripts/passkey_margins.py MODEL KEY LENGTH DEPTH [--kv pod] [--podkv build/podkv]
e.g. scripts/passkey_margins.py models/podkv-long-pod 10794 4096 0.4 --kv pod
"""
import argparse, array, json, os, struct, subprocess, tempfile

INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
         "I will quiz you about the important information there.\n")
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model"); ap.add_argument("key"); ap.add_argument("length", type=int); ap.add_argument("depth", type=float)
    ap.add_argument("--kv", default="dense"); ap.add_argument("--podkv", default="build/podkv"); ap.add_argument("-t", default="2")
    a = ap.parse_args()

    def tok(text, bos=False):
        cmd = [a.podkv, "tokenize", "--tokenizer", a.model] + ([] if bos else ["--no-bos"])
        return [int(x) for x in subprocess.run(cmd, input=text, capture_output=True, text=True, check=True).stdout.split()]

    intro = tok(INTRO, bos=True)
    needle = tok(f" The pass key is {a.key}. Remember it. {a.key} is the pass key.")
    question = tok("\nWhat is the pass key? The pass key is")
    unit = tok(FILLER)
    n = a.length - len(intro) - len(needle) - len(question)
    hay = (unit * (n // len(unit) + 1))[:n]
    pos = int(a.depth * n + 0.5)  # eval's llround (halves away from zero), not Python's round
    prompt = intro + hay[:pos] + needle + hay[pos:] + question
    answer = tok(f" {a.key}.")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.safetensors")
        subprocess.run([a.podkv, "logits", "-m", a.model, "--ids", ",".join(map(str, prompt + answer)), "--kv", a.kv,
                        "-t", a.t, "--out", out], check=True, capture_output=True)
        blob = open(out, "rb").read()
    size = struct.unpack("<Q", blob[:8])[0]
    meta = json.loads(blob[8:8 + size])["logits"]
    vocab, base = meta["shape"][1], 8 + size + meta["data_offsets"][0]
    print(f"{a.model}, --kv {a.kv}: passkey {a.key}, {len(prompt)}-token prompt, needle {a.depth:.0%} deep")
    for i, target in enumerate(answer):
        row = array.array("f")
        at = base + (len(prompt) - 1 + i) * vocab * 4
        row.frombytes(blob[at:at + vocab * 4])
        best = max(range(vocab), key=lambda j: row[j])
        other = max(row[j] for j in range(vocab) if j != target)
        print(f"  answer token {i}: target {target}, argmax {best} {'ok ' if best == target else 'WRONG'}"
              f"  logit {row[target]:.3f} against {other:.3f} for the best other")


if __name__ == "__main__":
    main()
