// The key tiles a run of prefill rows reads, by token class (PoD's proximal and distant tokens),
// and their walk: next_tile's cursor and TileWalk's closed form of it. Plain integer arithmetic for
// the prefill attention kernels (prefill_warp.cuh) and for the host, where the CPU tests check
// TileWalk against the cursor (tests/test_tile_walk.cpp).
#pragma once

#include <cstdint>

#include "kv/token_classes.h"
#include "util/host_device.h"

namespace podkv::cuda::prefill {

// min and max of ints: CUDA's on the device (the kernels' machine code as before this header; a
// select of their own compiled differently), plain compares on the host.
PODKV_HOST_DEVICE_INLINE int tile_min(int a, int b) {
#if defined(__CUDA_ARCH__)
  return min(a, b);
#else
  return a < b ? a : b;
#endif
}
PODKV_HOST_DEVICE_INLINE int tile_max(int a, int b) {
#if defined(__CUDA_ARCH__)
  return max(a, b);
#else
  return a > b ? a : b;
#endif
}

// A key tile every row of a warp reads whole (causal mask and class masks all pass), of one class;
// kMixed: masked element by element.
enum TileClass { kMixed, kProximal, kDistant };

// Which keys the query rows at positions [pos0, pos0 + rows) read, class by class: the bounds of
// their sink ends and recent-window starts (positions fit in 32 bits, as in paged.cuh).
struct KeySpan {
  int32_t pos0 = 0, last = -1, sink_min = 0, sink_max = 0, recent_min = 0, recent_max = 0;
  bool split = false;

  KeySpan() = default;
  // `step` has the step's sink_tokens and recent_tokens (DeviceStep on the device).
  template <class Step>
  PODKV_HOST_DEVICE KeySpan(const Step& step, int64_t first_pos, int64_t rows) {
    split = step.recent_tokens > 0;
    pos0 = static_cast<int32_t>(first_pos);
    last = static_cast<int32_t>(first_pos + (rows > 0 ? rows : 0) - 1);
    sink_min = static_cast<int32_t>(sink_end(pos0, step.sink_tokens, split));
    sink_max = static_cast<int32_t>(sink_end(last, step.sink_tokens, split));
    recent_min = static_cast<int32_t>(recent_begin(pos0, step.sink_tokens, step.recent_tokens, split));
    recent_max = static_cast<int32_t>(recent_begin(last, step.sink_tokens, step.recent_tokens, split));
  }
  // Whether some row needs keys [k0, k0 + keys) in pass `pass` (0: the own streams, all keys when
  // one_pass, else sink + recent; 1: the distant source).
  PODKV_HOST_DEVICE bool needed(bool one_pass, int pass, int32_t k0, int keys) const {
    if (k0 > last) return false;
    if (one_pass) return true;
    if (pass == 1) return k0 < recent_max && k0 + keys > sink_min;
    return k0 < sink_max || k0 + keys > recent_min;
  }
  // The class of keys [k0, k0 + keys) when every row reads all of them, else kMixed.
  PODKV_HOST_DEVICE TileClass uniform(int32_t k0, int keys) const {
    if (k0 + keys - 1 > pos0) return kMixed;  // the causal edge: the first row reads keys up to pos0
    if (!split || k0 + keys <= sink_min || k0 >= recent_max) return kProximal;
    if (k0 >= sink_max && k0 + keys <= recent_min) return kDistant;
    return kMixed;
  }
};

// A key tile of the passes over a run of rows: pass 0 over the own streams (all keys in one pass,
// else sink + recent), pass 1 over the distant source; pass == passes once no tile is left.
struct TileCursor {
  int pass;
  int32_t k0;
};

// The tile after c, `keys` wide, that some row of `span` needs (TileCursor{0, -keys} gives the
// first). kPastLast: c itself once no tile is left (for a pipeline that looks ahead of the last
// tile); else not to be called then.
template <bool kPastLast = false>
PODKV_HOST_DEVICE_INLINE TileCursor next_tile(TileCursor c, const KeySpan& span, bool one_pass, int passes, int keys) {
  for (;;) {
    if (kPastLast && c.pass >= passes) return c;
    c.k0 += keys;
    if (c.k0 > span.last) c.pass += 1, c.k0 = 0;
    if (c.pass >= passes || span.needed(one_pass, c.pass, c.k0, keys)) return c;
  }
}

// The tiles next_tile visits from TileCursor{0, -keys} (the passes' tiles that some row of `span`
// needs), in closed form: their count, and tile j's pass and k0 without walking the tiles before it.
// Per pass these are the tiles t with keys t <= span.last that span.needed takes: a prefix (sink)
// and a suffix (recent window) in pass 0, one run in pass 1. `passes` is HeadSources::passes() (1
// when one_pass). A loop over j < count runs on a trip count ptxas can keep warp-uniform, and at(j)
// is a few selects where next_tile's walk is a loop of branches (about 8% of the computing warps'
// stall samples in session 34's profile).
struct TileWalk {
  int count = 0;
  int sink = 0;       // pass 0's first tiles, k0 = keys j
  int sink_skip = 0;  // then tiles from sink + sink_skip on (over the tiles no row needs)
  int own = 0;        // pass 0's tiles (the own streams); tiles j >= own are pass 1's,
  int distant0 = 0;   // from tile distant0 on
  int keys = 0;

  PODKV_HOST_DEVICE_INLINE TileWalk(const KeySpan& span, bool one_pass, int passes, int keys_) : keys(keys_) {
    if (span.last < 0) return;
    const int all = span.last / keys + 1;  // tiles with k0 <= last
    if (one_pass) {
      count = sink = own = all;
      return;
    }
    auto below = [&](int32_t end) { return end > 0 ? tile_min(all, (end + keys - 1) / keys) : 0; };  // k0 < end
    auto from = [&](int32_t begin) { return begin > 0 ? tile_min(all, begin / keys) : 0; };         // k0 + keys > begin
    sink = below(span.sink_max);
    const int recent = tile_max(sink, from(span.recent_min));
    sink_skip = recent - sink;
    own = count = sink + all - recent;  // pass 0: k0 < sink_max or k0 + keys > recent_min
    distant0 = from(span.sink_min);
    if (passes > 1) count += tile_max(0, below(span.recent_max) - distant0);  // pass 1
  }
  // Tile j (< count) of the walk.
  PODKV_HOST_DEVICE_INLINE TileCursor at(int j) const {
    const bool distant = j >= own;
    const int t = distant ? j - own + distant0 : j >= sink ? j + sink_skip : j;
    return TileCursor{distant ? 1 : 0, t * keys};
  }
};

}  // namespace podkv::cuda::prefill
