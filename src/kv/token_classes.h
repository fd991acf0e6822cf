// The token-class arithmetic of pod-method.md, in one place for host code and
// (later) CUDA device code: plain functions of integers, no library types.
//
// For a query at position t, with ns sink tokens and a window of nr recent ones:
//   sink     [0, sink_end)              sink_end = min(ns, t + 1)
//   distant  [sink_end, recent_begin)   empty when t - nr + 1 <= ns
//   recent   [recent_begin, t + 1)      recent_begin = max(sink_end, t - nr + 1)
// With no window (nr == 0, `split` false) every key is one proximal span [0, t + 1).
// After a commit of `length` tokens, positions in [sink, window_base) have left
// the recent window of every later query: window_base = max(ns, length - nr).
#pragma once

#include <cstdint>

#include "util/host_device.h"

namespace podkv {

PODKV_HOST_DEVICE inline int64_t sink_end(int64_t pos, int64_t sink, bool split) {
  if (!split) return 0;
  return sink < pos + 1 ? sink : pos + 1;
}

PODKV_HOST_DEVICE inline int64_t recent_begin(int64_t pos, int64_t sink, int64_t recent, bool split) {
  if (!split) return 0;
  const int64_t s = sink_end(pos, sink, split);
  const int64_t r = pos - recent + 1;
  return s > r ? s : r;
}

PODKV_HOST_DEVICE inline bool has_distant(int64_t pos, int64_t sink, int64_t recent, bool split) {
  return split && recent_begin(pos, sink, recent, split) > sink_end(pos, sink, split);
}

PODKV_HOST_DEVICE inline int64_t window_base_at(int64_t length, int64_t sink, int64_t recent) {
  const int64_t b = length - recent;
  return sink > b ? sink : b;
}

// Retention codes of a stream (kv_layout.h's Retention, as plain ints).
enum : int32_t { kRetainFull = 0, kRetainWindow = 1, kRetainNone = 2, kRetainSelected = 3 };

// The layer a class of tokens of a stream is read from, or -1 when masked:
// distant tokens of a Window/None stream come from its distant source (PoD:
// the block's anchor), proximal tokens of a None stream from its proximal
// source (CLA); everything else from the layer itself.
PODKV_HOST_DEVICE inline int source_layer(int layer, int32_t retention, int distant_source, int proximal_source,
                                          bool distant) {
  if (distant && (retention == kRetainWindow || retention == kRetainNone)) return distant_source;
  if (!distant && retention == kRetainNone) return proximal_source;
  return layer;
}

}  // namespace podkv
