#!/usr/bin/env python3
"""Compares two `podkv eval` runs of the same settings (e.g. --device cpu and --device cuda):
per record (item, policy), the greedy text generated and the KV bytes held must be equal.

    python3 scripts/compare_eval_runs.py RUN_A/results.json RUN_B/results.json
Prints one line per policy (records equal / total) and exits 1 on any difference.
"""
import json
import sys
from collections import defaultdict


def records(path):
    with open(path) as f:
        data = json.load(f)
    return {(r["item"], r["policy"], r["options"]): r for r in data["records"]}


def main():
    a, b = records(sys.argv[1]), records(sys.argv[2])
    if a.keys() != b.keys():
        print("the runs hold different records")
        return 1
    equal, total = defaultdict(int), defaultdict(int)
    for key, ra in a.items():
        rb = b[key]
        total[key[1]] += 1
        same = ra["generated"] == rb["generated"] and ra["kv_bytes"] == rb["kv_bytes"]
        equal[key[1]] += same
        if not same:
            print(f"  differs: item {key[0]} {key[1]}: {ra['generated']!r} ({ra['kv_bytes']} B) vs "
                  f"{rb['generated']!r} ({rb['kv_bytes']} B)")
    for policy in total:
        print(f"{policy}: {equal[policy]}/{total[policy]} records equal (generated text and KV bytes)")
    return 0 if all(equal[p] == total[p] for p in total) else 1


if __name__ == "__main__":
    sys.exit(main())
