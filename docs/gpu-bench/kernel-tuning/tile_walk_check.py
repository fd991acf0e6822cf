"""TileWalk (src/cuda/prefill_warp.cuh) against the walk it stands for, on the host.

The copying prefill kernel's 64-key loop runs TileWalk::count iterations and takes tile j's pass
and k0 from TileWalk::at(j) (session 35; session 34's count_tiles gave the count alone), where it
ran until next_tile's cursor was past its passes. A count too small drops keys, too large leaves the
computing warps waiting for stages the copying warps never fill; a wrong place reads the wrong keys
(the copying warps and the computing warps both take their tiles from it). This replica of
KeySpan::needed, next_tile and TileWalk (line by line, integers as in C++: every division here is of
a positive value) compares the tiles of the two, in order, on random spans: PoD's shape, ordered,
and any values (unordered, negative). The GPU's attention op cases (scripts/test_gpu.sh) check the
kernel itself.

  python3 docs/gpu-bench/kernel-tuning/tile_walk_check.py   # prints "0 mismatches in 300000 spans"
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
    """The tiles (pass, k0) next_tile visits from TileCursor{0, -keys}."""
    last = span[0]
    pass_, k0, tiles = 0, -KEYS, []
    while True:
        while True:
            k0 += KEYS
            if k0 > last:
                pass_, k0 = pass_ + 1, 0
            if pass_ >= passes or needed(span, one_pass, pass_, k0, KEYS):
                break
        if pass_ >= passes:
            return tiles
        tiles.append((pass_, k0))


def tile_walk(span, one_pass, passes):
    """TileWalk's count and at(j) for every j < count."""
    last, sink_min, sink_max, recent_min, recent_max = span
    count = sink = sink_skip = own = distant0 = 0
    if last >= 0:
        all_ = last // KEYS + 1
        if one_pass:
            count = sink = own = all_
        else:
            below = lambda end: min(all_, (end + KEYS - 1) // KEYS) if end > 0 else 0
            start = lambda begin: min(all_, begin // KEYS) if begin > 0 else 0
            sink = below(sink_max)
            recent = max(sink, start(recent_min))
            sink_skip = recent - sink
            own = count = sink + all_ - recent
            distant0 = start(sink_min)
            if passes > 1:
                count += max(0, below(recent_max) - distant0)

    def at(j):
        distant = j >= own
        t = j - own + distant0 if distant else (j + sink_skip if j >= sink else j)
        return (1 if distant else 0, t * KEYS)

    return [at(j) for j in range(count)]


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
        expected, got = walk(span, one_pass, passes), tile_walk(span, one_pass, passes)
        if expected != got:
            bad += 1
            if bad <= 5:
                print("mismatch", span, one_pass, passes, expected[:8], got[:8], len(expected), len(got))
    print(f"{bad} mismatches in {trials} spans")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
