"""count_tiles (src/cuda/prefill_warp.cuh) against the walk it stands for, on the host.

The copying prefill kernel's 64-key loop runs count_tiles(...) iterations (session 34), where it
ran until next_tile's cursor was past its passes. A count too small drops keys; too large leaves
the computing warps waiting for stages the copying warps never fill. This replica of KeySpan::needed,
next_tile and count_tiles (line by line, integers as in C++: every division here is of a positive
value) compares the two on random spans: PoD's shape, ordered, and any values (unordered,
negative). A review (session 34) ran the C++ functions themselves, compiled for the host, on 12.7M
spans from KeySpan's own constructor and random fields: 0 mismatches. The GPU's attention op
cases (scripts/test_gpu.sh) check the kernel itself.

  python3 docs/gpu-bench/kernel-tuning/count_tiles_check.py   # prints "0 mismatches in 300000 spans"
"""
import random

KEYS = 64


def needed(span, one_pass, pass_, k0, keys):
    last, sink_min, sink_max, recent_min, recent_max = span
    if k0 > last:
        return False
    if one_pass:
        return True
    if pass_ == 1:
        return k0 < recent_max and k0 + keys > sink_min
    return k0 < sink_max or k0 + keys > recent_min


def walk(span, one_pass, passes):
    """Tiles next_tile visits from TileCursor{0, -keys}."""
    last = span[0]
    pass_, k0, n = 0, -KEYS, 0
    while True:
        while True:
            k0 += KEYS
            if k0 > last:
                pass_, k0 = pass_ + 1, 0
            if pass_ >= passes or needed(span, one_pass, pass_, k0, KEYS):
                break
        if pass_ >= passes:
            return n
        n += 1


def count_tiles(span, one_pass, passes):
    last, sink_min, sink_max, recent_min, recent_max = span
    if last < 0:
        return 0
    all_ = last // KEYS + 1
    if one_pass:
        return all_
    below = lambda end: min(all_, (end + KEYS - 1) // KEYS) if end > 0 else 0
    start = lambda begin: min(all_, begin // KEYS) if begin > 0 else 0
    sink, recent = below(sink_max), start(recent_min)
    n = sink + all_ - max(sink, recent)
    if passes > 1:
        n += max(0, below(recent_max) - start(sink_min))
    return n


def main(trials=300000):
    rng = random.Random(1)
    bad = 0
    for _ in range(trials):
        last = rng.randint(-1, 3000)
        if rng.random() < 0.3:  # PoD's shape: a short sink, a window near the end
            sink_min = sink_max = rng.randint(0, 40)
            recent_min = rng.randint(0, max(last, 0) + 5)
            recent_max = recent_min + rng.randint(0, 40)
        elif rng.random() < 0.5:  # ordered
            sink_min, sink_max = sorted(rng.randint(0, 3200) for _ in range(2))
            recent_min, recent_max = sorted(rng.randint(0, 3200) for _ in range(2))
        else:  # anything: unordered, negative
            sink_min, sink_max, recent_min, recent_max = (rng.randint(-200, 3200) for _ in range(4))
        span = (last, sink_min, sink_max, recent_min, recent_max)
        one_pass = rng.random() < 0.2
        passes = 1 if one_pass else rng.choice([1, 2])
        if walk(span, one_pass, passes) != count_tiles(span, one_pass, passes):
            bad += 1
            if bad <= 5:
                print("mismatch", span, one_pass, passes, walk(span, one_pass, passes), count_tiles(span, one_pass, passes))
    print(f"{bad} mismatches in {trials} spans")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
