#!/usr/bin/env python3
# full-context/acceptance.txt from the two runs' results: python3 summarize.py full-context
import json, sys
root = sys.argv[1]
acc, lines = {}, []
for task in ("passkey", "niah"):
    r = json.load(open(f"{root}/{task}/results.json"))
    per = {}
    for rec in r["records"]:
        it = r["items"][rec["item"]]
        per.setdefault(it["depth"], []).append((rec["correct"], it["answer"], rec["generated"]))
    acc[task] = per
depths = sorted(acc["passkey"])
print("dense accuracy at the full context (4096 tokens), 40 prompts per depth (seed 1), shipped bf16 weights, H200")
print("| depth | passkey | needle |\n| ---: | ---: | ---: |")
for d in depths:
    print(f"| {d:g}% | " + " | ".join(f"{sum(c for c, _, _ in acc[t][d]) / len(acc[t][d]):.3f}" for t in ("passkey", "niah")) + " |")
for t in ("passkey", "niah"):
    rows = [(d, c) for d in depths for c in acc[t][d]]
    hits = sum(c[0] for _, c in rows)
    worst = min((sum(c for c, _, _ in acc[t][d]) / len(acc[t][d]), d) for d in depths)
    verdict = "PASS" if worst[0] >= 0.95 else f"FAIL at {worst[1]:g}% ({worst[0]:.3f})"
    print(f"{t}: {hits}/{len(rows)}, minimum {worst[0]:.3f}: {verdict}")
    for d, (c, a, g) in rows:
        if not c:
            print(f"  miss: depth {d:g}%, answer {a}, generated {g!r}")
