#!/usr/bin/env python3
"""The KV-saved-against-quality table of docs/long-model, from the results.json
files of scripts/eval_long_model.sh, beside the paper's (pod-method.md).

    python3 scripts/long_model_table.py docs/long-model/eval > docs/long-model/table.md

Quality here: the mean accuracy of the retrieval grids (needle, passkey,
key-value retrieval) that dense itself solves (a grid where dense scores 0
says nothing about a cache, and is shown but left out of the mean); "drop" is
1 - mean / dense's mean, as the paper reports
the relative drop of the LongBench average. Perplexity and top-1 agreement with
dense (on held-out books, 4096-token windows) are beside it. KV saved is at the
longest prompt (4096 tokens), from the bytes each cache held.
"""
import json
import os
import sys

GRIDS = [("niah", "needle"), ("passkey", "passkey"), ("kv-retrieval", "kv retrieval")]
PAPER = {  # Llama-3-8B-32K, from ../shared/docs/pod-method.md: KV saved, quality drop
    "streaming": ("87.5%", "8.0%"), "h2o": ("87.5%", "7.4%"), "snapkv": ("87.5%", "4.3%"),
    "cla": ("50%", "31.4%"), "pod-adapted": ("35%", "2.8%"), "pod+snapkv": ("91.9%", "3.1%"),
}


def load(root, task):
    path = os.path.join(root, task, "results.json")
    if not os.path.exists(path):
        return None
    return {p["label"]: p for p in json.load(open(path))["policies"]}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: long_model_table.py EVAL_DIR (the OUT_DIR of scripts/eval_long_model.sh)")
    root = sys.argv[1]
    grids = {task: load(root, task) for task, _ in GRIDS}
    windows = {task: load(root, task) for task in ("perplexity", "agreement")}
    runs = [r for r in list(grids.values()) + list(windows.values()) if r]
    if not runs:
        sys.exit(f"error: {root}: no TASK/results.json of scripts/eval_long_model.sh")
    labels = list(runs[0])
    for task, r in list(grids.items()) + list(windows.items()):
        if r and set(r) != set(labels):
            sys.exit(f"error: {root}/{task}: its methods {sorted(r)} are not those of the other tasks {sorted(labels)}")
    if "dense" not in labels:
        sys.exit(f"error: {root}: no 'dense' method to compare with")
    solved = [t for t, _ in GRIDS if grids[t] and grids[t]["dense"]["accuracy"] > 0]
    mean = {}
    for label in labels:
        accs = [grids[t][label]["accuracy"] for t in solved]
        mean[label] = sum(accs) / len(accs) if accs else float("nan")
    dense = mean.get("dense", float("nan"))
    head = ["method", "KV saved @ 4096"] + [name for t, name in GRIDS if grids[t]]
    head += ["mean of " + " + ".join(name for t, name in GRIDS if t in solved), "drop vs dense"]
    if windows["perplexity"]:
        head.append("perplexity")
    if windows["agreement"]:
        head.append("top-1 agreement")
    head += ["paper: KV saved", "paper: drop"]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for label in labels:
        saving = runs[0][label]["kv_saving"]
        row = [label, f"{saving * 100:.1f}%"]
        row += [f"{grids[t][label]['accuracy'] * 100:.1f}%" for t, _ in GRIDS if grids[t]]
        row += [f"{mean[label] * 100:.1f}%", f"{(1 - mean[label] / dense) * 100:.1f}%"]
        if windows["perplexity"]:
            row.append(f"{windows['perplexity'][label]['perplexity']:.3f}")
        if windows["agreement"]:
            row.append(f"{windows['agreement'][label]['top1_agreement'] * 100:.1f}%")
        row += list(PAPER.get(label, PAPER.get(label.split(":")[0], ("", ""))))
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
