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

}  // namespace podkv::cuda
