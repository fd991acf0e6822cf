// The KV pool on the device: the step's new keys and values written through
// the view, encoded in the pool's entry type (ops/kv_write.h), and the entry
// copies the host bookkeeping asks for when token selection moves kept tokens.
#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"
#include "cuda/paged.cuh"
#include "kv/token_classes.h"

namespace podkv::cuda {

namespace {

// One block per (row, KV head): warp 0 writes the key, warp 1 the value.
template <KvDType T>
__global__ void kv_write_kernel(DeviceStep s, int layer, const float* k, const float* v) {
  const int64_t row = blockIdx.x;
  const int h = blockIdx.y;
  const int kind = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int H = s.num_kv_heads, d = s.head_dim;
  const KvRule& rule = (kind == kKeys ? s.key_rules : s.value_rules)[layer * H + h];
  if (rule.retention == kRetainNone) return;
  const int b = s.row_entry[row];
  const int64_t pos = s.first_pos[b] + (row - s.row_begin[b]);
  uint8_t* e = entry_at(s, stream_of(s, b, kind, layer, h), pos);
  if (e == nullptr) return;
  const float* src = (kind == kKeys ? k : v) + (row * H + h) * d;
  float x[kLaneElems];
#pragma unroll
  for (int c = 0; c < kLaneElems; ++c) x[c] = lane + 32 * c < d ? src[lane + 32 * c] : 0.0f;
  encode_entry<T>(x, lane, d, e);
}

// Copies in order in one block (a later copy may read what an earlier one wrote).
__global__ void copy_entries_kernel(uint8_t* pool, int64_t page_bytes, int64_t entry_bytes, const EntryCopy* copies,
                                    int64_t count) {
  for (int64_t c = 0; c < count; ++c) {
    const EntryCopy cp = copies[c];
    const uint8_t* src = pool + cp.src_page * page_bytes + cp.src_slot * entry_bytes;
    uint8_t* dst = pool + cp.dst_page * page_bytes + cp.dst_slot * entry_bytes;
    // Entries never overlap partly: src and dst are one entry or disjoint.
    for (int64_t i = threadIdx.x; i < entry_bytes; i += blockDim.x) dst[i] = src[i];
    __syncthreads();
  }
}

}  // namespace

void kv_write(const DeviceStep& step, int layer, const float* k, const float* v, cudaStream_t stream) {
  if (step.rows == 0) return;
  check(step.head_dim <= kMaxHeadDim, "cuda kv_write: head_dim " + std::to_string(step.head_dim) + " above 128");
  const dim3 grid(static_cast<unsigned>(step.rows), static_cast<unsigned>(step.num_kv_heads));
  switch (static_cast<KvDType>(step.dtype)) {
    case KvDType::F32: kv_write_kernel<KvDType::F32><<<grid, 64, 0, stream>>>(step, layer, k, v); break;
    case KvDType::F16: kv_write_kernel<KvDType::F16><<<grid, 64, 0, stream>>>(step, layer, k, v); break;
    case KvDType::BF16: kv_write_kernel<KvDType::BF16><<<grid, 64, 0, stream>>>(step, layer, k, v); break;
    case KvDType::Q8_0: kv_write_kernel<KvDType::Q8_0><<<grid, 64, 0, stream>>>(step, layer, k, v); break;
  }
  check_launch("kv_write_kernel");
}

void copy_entries(uint8_t* pool, int64_t page_bytes, int64_t entry_bytes, const EntryCopy* copies, int64_t count,
                  cudaStream_t stream) {
  if (count == 0) return;
  copy_entries_kernel<<<1, 256, 0, stream>>>(pool, page_bytes, entry_bytes, copies, count);
  check_launch("copy_entries_kernel");
}

}  // namespace podkv::cuda
