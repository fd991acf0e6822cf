// Reading the step's paged view on the device: a stream's page table and the
// address of its entry i (kv/kv_view.h).
#pragma once

#include "cuda/device_step.h"
#include "kv/token_classes.h"

namespace podkv::cuda {

struct DeviceStream {
  const int32_t* pages = nullptr;
  int64_t num_pages = 0;
};

__device__ __forceinline__ DeviceStream stream_of(const DeviceStep& s, int b, int kind, int layer, int head) {
  const int64_t i = ((static_cast<int64_t>(b) * 4 + kind) * s.num_layers + layer) * s.num_kv_heads + head;
  return DeviceStream{s.page_indices + s.page_indptr[i], s.page_indptr[i + 1] - s.page_indptr[i]};
}

// Entry i (position or slot) in two halves, so that a kernel can read the page table early and use
// the answer later (its latency hidden behind other work): the page (-1: none) and the slot in it.
// Positions and page sizes fit in 32 bits: the division is a 32-bit one (a 64-bit division is a
// long software sequence on the GPU, and kernels look up several entries per key tile).
struct EntryRef {
  int32_t page = -1;
  uint32_t slot = 0;
};
__device__ __forceinline__ EntryRef entry_ref(const DeviceStep& s, const DeviceStream& st, int64_t i) {
  EntryRef r;
  if (i < 0) return r;
  const uint32_t n = static_cast<uint32_t>(i), per_page = static_cast<uint32_t>(s.page_tokens);
  const uint32_t logical = n / per_page;
  r.slot = n - logical * per_page;
  if (logical < st.num_pages) r.page = st.pages[logical];
  return r;
}
__device__ __forceinline__ uint8_t* entry_address(const DeviceStep& s, EntryRef r) {
  return r.page < 0 ? nullptr : s.pool + r.page * s.page_bytes + static_cast<int64_t>(r.slot) * s.entry_bytes;
}

// Entry i (position or slot), or null where the stream holds no page for it.
__device__ __forceinline__ uint8_t* entry_at(const DeviceStep& s, const DeviceStream& st, int64_t i) {
  return entry_address(s, entry_ref(s, st, i));
}

// In a row's stacked q | k | v heads, head `unit` past the `heads` query heads: KV head h's key
// (units heads .. heads + H - 1) or value (the next H). kv_write.cu, and decode_chain.cu's RoPE epilogue.
struct KvUnit {
  int kind, h;
};
__device__ __forceinline__ KvUnit kv_unit(int unit, int heads, int H) {
  const int kind = unit < heads + H ? kKeys : kValues;
  return {kind, unit - heads - (kind == kKeys ? 0 : H)};
}

// The entry row `row`'s key (kind kKeys) or value of KV head h goes to: null where the layout keeps
// none. The step's metadata only (kv_write.cu, and decode_chain.cu's RoPE epilogue).
__device__ __forceinline__ uint8_t* entry_of_row(const DeviceStep& s, int layer, int64_t row, int h, int kind) {
  const KvRule& rule = (kind == kKeys ? s.key_rules : s.value_rules)[layer * s.num_kv_heads + h];
  if (rule.retention == kRetainNone) return nullptr;
  const int b = s.row_entry[row];
  const int64_t pos = s.first_pos[b] + (row - s.row_begin[b]);
  return entry_at(s, stream_of(s, b, kind, layer, h), pos);
}

}  // namespace podkv::cuda
