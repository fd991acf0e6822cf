// Same-run memory bandwidth references for `podkv bench` and the benchmarks:
// a GEMV's bytes(W)/time is only meaningful next to what this machine, with the
// same threads, can stream right now.
#pragma once

#include <cstddef>

namespace podkv {

// Streaming copy of a `bytes`-sized float buffer into another (non-temporal stores
// where the CPU has them, so the traffic is exactly read + write), over the current
// threads (num_threads()). Counts bytes read + bytes written (2 · bytes) per copy;
// returns the best of `repeats` timed copies in GB/s (1e9 bytes/s). The default
// 256 MiB is far larger than any L3, so caches do not inflate the result.
double measure_copy_bandwidth_gbs(size_t bytes = size_t{256} << 20, int repeats = 5);

// Read-only stream (a sum over the buffer), the access pattern of a GEMV: bytes
// read per pass / time, best of `repeats`, in GB/s.
double measure_read_bandwidth_gbs(size_t bytes = size_t{256} << 20, int repeats = 5);

}  // namespace podkv
