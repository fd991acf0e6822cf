// Writes a step's new keys and values into the cache pool through the view:
// each entry encoded in the pool's entry type (kv/kv_entry.h).
#pragma once

#include <cstdint>

#include "kv/kv_view.h"

namespace podkv {

// k, v: [rows, H_kv * d] of `layer`; rows [row_begin[b], row_begin[b + 1]) of
// batch entry b sit at positions first_pos[b] + (row - row_begin[b]). Streams
// that keep nothing (retention None) are skipped.
void kv_write(const KvView& view, int layer, int num_seqs, const int64_t* row_begin, const int64_t* first_pos,
              const float* k, const float* v);

}  // namespace podkv
