#!/usr/bin/env python3
"""Summarises a decode-chain trace (PODKV_CHAIN_TRACE_FILE of a -DPODKV_CHAIN_TRACE build: one line per
launch slot and block, `slot block e0 .. e8`, %globaltimer ns at: 0 entry, 1 o's input read, 2 o done,
3 past barrier 1 and the norm, 4 gate | up done, 5 past barrier 2 and h read, 6 down done, 7 past
barrier 3 and the norm (0: the last layer), 8 the end).

Per launch (layers with a next projection), in microseconds from the first block's entry, the median
over launches of: when the blocks start (first / last), and for each stage when its blocks begin
(first / last past the barrier) and end (first / last done), then each barrier's gap (the last block
done to the first block past it) and the whole launch.
    chain_trace.py TRACE_FILE
"""
import statistics
import sys
from collections import defaultdict


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    launches = defaultdict(list)
    with open(sys.argv[1]) as f:
        for line in f:
            v = [int(x) for x in line.split()]
            if len(v) != 11:
                print(f"chain_trace: {sys.argv[1]}: a line of {len(v)} fields, not 11", file=sys.stderr)
                return 1
            launches[v[0]].append(v[2:])
    rows = defaultdict(list)
    stages = [("o", 1, 2), ("gate | up", 3, 4), ("down", 5, 6), ("next q | k | v", 7, 8)]
    for events in launches.values():
        if any(e[7] == 0 for e in events):
            continue  # the last layer: no fourth stage
        t0 = min(e[0] for e in events)
        us = lambda i, pick: (pick(e[i] for e in events) - t0) / 1000.0
        rows["blocks start (first, last)"].append((us(0, min), us(0, max)))
        for name, begin, end in stages:
            rows[f"{name}: begin (first, last)"].append((us(begin, min), us(begin, max)))
            rows[f"{name}: done (first, last)"].append((us(end, min), us(end, max)))
        for k, (done, past) in enumerate([(2, 3), (4, 5), (6, 7)], start=1):
            rows[f"barrier {k}: last done -> first past"].append((us(past, min) - us(done, max), 0.0))
        rows["launch (first entry -> last end)"].append((us(8, max), 0.0))
    if not rows:
        print(f"chain_trace: {sys.argv[1]}: no launch with all four stages", file=sys.stderr)
        return 1
    n = len(rows["launch (first entry -> last end)"])
    print(f"{n} launches; medians in us")
    for name, values in rows.items():
        a = statistics.median(v[0] for v in values)
        b = statistics.median(v[1] for v in values)
        print(f"  {name:40s} {a:8.2f}" + (f" {b:8.2f}" if any(v[1] for v in values) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
