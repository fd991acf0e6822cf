// Reading the step's paged view on the device: a stream's page table and the
// address of its entry i (kv/kv_view.h).
#pragma once

#include "cuda/device_step.h"

namespace podkv::cuda {

struct DeviceStream {
  const int32_t* pages = nullptr;
  int64_t num_pages = 0;
};

__device__ __forceinline__ DeviceStream stream_of(const DeviceStep& s, int b, int kind, int layer, int head) {
  const int64_t i = ((static_cast<int64_t>(b) * 4 + kind) * s.num_layers + layer) * s.num_kv_heads + head;
  return DeviceStream{s.page_indices + s.page_indptr[i], s.page_indptr[i + 1] - s.page_indptr[i]};
}

// Entry i (position or slot), or null where the stream holds no page for it.
// Positions and page sizes fit in 32 bits: the division is a 32-bit one (a 64-bit division is a
// long software sequence on the GPU, and kernels look up several entries per key tile).
__device__ __forceinline__ uint8_t* entry_at(const DeviceStep& s, const DeviceStream& st, int64_t i) {
  if (i < 0) return nullptr;
  const uint32_t n = static_cast<uint32_t>(i), per_page = static_cast<uint32_t>(s.page_tokens);
  const uint32_t logical = n / per_page;
  const int32_t page = logical < st.num_pages ? st.pages[logical] : -1;
  if (page < 0) return nullptr;
  return s.pool + page * s.page_bytes + static_cast<int64_t>(n - logical * per_page) * s.entry_bytes;
}

// The pages of a run of at most 16 consecutive entries [i0, i1] (i0 >= 0) of a stream, read from the
// page table together, so that the run's addresses (run_entry) need no more table reads: with pages of
// at least 16 entries the run lies within two pages (callers check). Decode attention reads the next
// key tile's pages before the current tile's arithmetic, taking a dependent round trip off each tile.
struct RunPages {
  uint32_t first_logical = 0;
  int32_t first = -1, last = -1;
};

__device__ __forceinline__ RunPages run_pages(const DeviceStep& s, const DeviceStream& st, int64_t i0, int64_t i1) {
  const uint32_t per_page = static_cast<uint32_t>(s.page_tokens);
  RunPages r;
  r.first_logical = static_cast<uint32_t>(i0) / per_page;
  const uint32_t last_logical = static_cast<uint32_t>(i1) / per_page;
  r.first = r.first_logical < st.num_pages ? st.pages[r.first_logical] : -1;
  r.last = last_logical < st.num_pages ? st.pages[last_logical] : -1;
  return r;
}

// entry_at for an entry of the run r was read for.
__device__ __forceinline__ uint8_t* run_entry(const DeviceStep& s, const RunPages& r, int64_t i) {
  const uint32_t n = static_cast<uint32_t>(i), per_page = static_cast<uint32_t>(s.page_tokens);
  const uint32_t logical = n / per_page;
  const int32_t page = logical == r.first_logical ? r.first : r.last;
  if (page < 0) return nullptr;
  return s.pool + page * s.page_bytes + static_cast<int64_t>(n - logical * per_page) * s.entry_bytes;
}

}  // namespace podkv::cuda
