// The plain view of a paged KV cache that attention kernels read for one
// batch step: flat arrays and pointers only (no C++ objects), so the same
// struct can be copied to a GPU with its arrays (FlashInfer's indptr/indices
// style). Built per step by KvViewBuilder (kv_view_builder.h) from the host
// bookkeeping (KvCache) after every sequence of the step is reserved.
//
// Streams: for batch entry b, kind k (0 keys, 1 values, 2 key store, 3 value
// store), layer l and KV head h, the stream index is
//   s = ((b * 4 + k) * L + l) * H + h
// and its logical pages are page_indices[page_indptr[s] .. page_indptr[s + 1]),
// -1 where a page is not held (given back, or never stored). Keys/values are
// indexed by position (position / page_tokens), stores by slot.
// Entry i of page p lives at pool + p * page_bytes + i * entry_bytes.
//
// Selection groups (H2O, SnapKV, PoD+SnapKV): for entry b and group g,
// store_size[b * G + g] kept distant tokens sit in the store streams, and
// window_base[b] is the first non-sink position still in the windows. The
// scores attention adds are written to a flat output (not to the cache):
// region r = b * G + g starts at score_indptr[r] and holds the store slots
// [0, store_size) followed by positions [window_base[b], new_length[b]).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kv/kv_entry.h"

namespace podkv {

enum KvStreamKind : int { kKeys = 0, kValues = 1, kKeyStore = 2, kValueStore = 3 };

// One stream's rule as plain ints (kv_layout.h's StreamRule).
struct KvRule {
  int32_t retention = 0;        // token_classes.h kRetain*
  int32_t distant_source = -1;  // layer read for distant tokens when not Full; -1 = masked
  int32_t proximal_source = -1; // layer read for proximal tokens when None
  int32_t distant_group = -1;   // keys: selection group whose slots hold the distant tokens read, -1 = by position
};

struct KvView {
  // Pool.
  KvDType dtype = KvDType::F32;
  uint8_t* pool = nullptr;  // host or device memory, page_bytes * pages (kernels only read; kv_write writes)
  int64_t page_tokens = 0;
  int64_t entry_bytes = 0;
  int64_t page_bytes = 0;
  // Geometry and rules.
  int num_layers = 0, num_kv_heads = 0, head_dim = 0;
  int64_t sink_tokens = 0, recent_tokens = 0;
  const KvRule* key_rules = nullptr;    // [L * H]
  const KvRule* value_rules = nullptr;  // [L * H]
  int num_groups = 0;                   // G
  // Batch.
  int num_seqs = 0;                     // B
  const int64_t* new_length = nullptr;  // [B] length once the step's tokens are written
  const int64_t* window_base = nullptr; // [B] of the committed length before the step
  const int64_t* page_indptr = nullptr; // [B * 4 * L * H + 1]
  const int32_t* page_indices = nullptr;
  // Names the contents of page_indptr and page_indices: two views with the same non-zero generation
  // hold the same tables (a backend that keeps a copy, such as CUDA's in device memory, may skip
  // sending them again); 0 says nothing. When tables_base_generation is not 0, streams
  // [0, tables_same_streams) have the same indptr values and page indices as in that generation
  // (the entries before the first whose tables changed): a backend holding that generation may
  // send only the rest.
  uint64_t tables_generation = 0;
  uint64_t tables_base_generation = 0;
  int64_t tables_same_streams = 0;
  const int64_t* store_size = nullptr;   // [B * G]
  const int64_t* score_indptr = nullptr; // [B * G + 1]

  int64_t stream(int b, int kind, int layer, int head) const {
    return ((static_cast<int64_t>(b) * 4 + kind) * num_layers + layer) * num_kv_heads + head;
  }
};

// Read access to one stream of one batch entry: entry `i` (position or slot).
struct StreamView {
  const int32_t* page_table = nullptr;  // [logical pages], -1 = not held
  int64_t num_pages = 0;
  const uint8_t* pool = nullptr;
  int64_t page_tokens = 0;
  int64_t entry_bytes = 0;
  int64_t page_bytes = 0;

  const uint8_t* at(int64_t i) const {
    return pool + static_cast<int64_t>(page_table[i / page_tokens]) * page_bytes + (i % page_tokens) * entry_bytes;
  }
  bool holds(int64_t i) const {
    const int64_t logical = i / page_tokens;
    return i >= 0 && logical < num_pages && page_table[logical] >= 0;
  }
};

inline StreamView stream_view(const KvView& v, int b, int kind, int layer, int head) {
  const int64_t s = v.stream(b, kind, layer, head);
  StreamView sv;
  sv.page_table = v.page_indices + v.page_indptr[s];
  sv.num_pages = v.page_indptr[s + 1] - v.page_indptr[s];
  sv.pool = v.pool;
  sv.page_tokens = v.page_tokens;
  sv.entry_bytes = v.entry_bytes;
  sv.page_bytes = v.page_bytes;
  return sv;
}

}  // namespace podkv
