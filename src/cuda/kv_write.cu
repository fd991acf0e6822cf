// The KV pool on the device: the step's new keys and values written through
// the view, encoded in the pool's entry type (ops/kv_write.h), on their own or
// fused with the split and RoPE of the stacked q, k, v projection (one launch
// per layer instead of two in a decode step), and the entry copies the host
// bookkeeping asks for when token selection moves kept tokens.
#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"
#include "cuda/paged.cuh"
#include "cuda/pdl.cuh"
#include "cuda/rope.cuh"
#include "kv/token_classes.h"

namespace podkv::cuda {

namespace {

// src's d floats encoded as T into entry e (null: nothing), by one warp.
template <KvDType T>
__device__ __forceinline__ void encode_to(const DeviceStep& s, uint8_t* e, const float* src, int lane) {
  const int d = s.head_dim;
  if (e == nullptr) return;
  float x[kLaneElems];
#pragma unroll
  for (int c = 0; c < kLaneElems; ++c) x[c] = lane + 32 * c < d ? src[lane + 32 * c] : 0.0f;
  encode_entry<T>(x, lane, d, e);
}

// One warp writes row `row`'s key (kind kKeys) or value of KV head h, `src` its d floats, into the
// entry of its position, encoded as T; nothing where the layout keeps no such entry.
template <KvDType T>
__device__ __forceinline__ void write_entry(const DeviceStep& s, int layer, int64_t row, int h, int kind,
                                            const float* src, int lane) {
  encode_to<T>(s, entry_of_row(s, layer, row, h, kind), src, lane);
}

// One block per (row, KV head): warp 0 writes the key, warp 1 the value.
template <KvDType T>
__global__ void kv_write_kernel(DeviceStep s, int layer, const float* k, const float* v) {
  const int64_t row = blockIdx.x;
  const int h = blockIdx.y;
  const int kind = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t at = (row * s.num_kv_heads + h) * s.head_dim;
  write_entry<T>(s, layer, row, h, kind, (kind == kKeys ? k : v) + at, lane);
}

// split_qkv_rope and kv_write in one launch: one warp per (row, unit) at a time, units [0, heads)
// the query heads, then the KV heads' keys, then their values; a block is `units_per_block` units
// of one row (its kFusedWarps warps taking every kFusedWarps-th), whose angles' sines and cosines it
// takes once (every head of a row rotates by the same angles: per head they cost more than the
// row's reads and writes). Steps of kWholeRowBlocks rows or more take a whole row per block, so the
// sines and cosines (in double) are taken once per row, not once per 8 units: a 32K prompt's RoPE
// and KV writes went from 26.7 to 21.9 ms on the H200 (session 24). Smaller steps keep 8 units per
// block, for more blocks in flight. The choice is by rows alone: decode batches of 32 sequences or
// more take whole-row blocks too (not timed; raising the bound to 256 is
// docs/gpu-bench/kernel-tuning/session24-rope-rows-256-untested.patch). backend_ops' kv_write
// cases (steps of 43 rows) take the whole-row blocks, the CUDA fixtures' decode steps the others.
// A key or value head is written to k or v first (rotated, or copied), then read back by the same
// warp (__syncwarp orders the warp's global writes before its reads) and encoded as
// kv_write_kernel encodes it: the same q, k, v and pool bytes as the two launches.
constexpr int kFusedWarps = 8;
constexpr int kWholeRowBlocks = 32;

template <KvDType T>
__global__ void __launch_bounds__(kFusedWarps * 32)
    split_qkv_rope_kv_write_kernel(DeviceStep s, int layer, const float* qkv, int heads, const int64_t* positions,
                                   const float* inv_freq, bool interleaved, float* q, float* k, float* v,
                                   int units_per_block) {
  const int64_t row = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int H = s.num_kv_heads, d = s.head_dim, half = d / 2, units = heads + 2 * H;
  const int64_t nq = static_cast<int64_t>(heads) * d, nkv = static_cast<int64_t>(H) * d;
  const float* src = qkv + row * (nq + 2 * nkv);
  pdl_launch_dependents();  // the attention's blocks may start; they wait for this kernel to finish
  // Before pdl_wait (pdl.cuh), what needs only the step's metadata: the angles, and the entry of the
  // warp's first unit when it is a key or a value.
  __shared__ double sin_s[kMaxHeadDim / 2], cos_s[kMaxHeadDim / 2];
  for (int i = threadIdx.x; i < half; i += blockDim.x) rope_sincos(i, positions[row], inv_freq, sin_s[i], cos_s[i]);
  const int first = blockIdx.y * units_per_block, end = min(units, first + units_per_block);
  const int first_unit = first + warp;
  uint8_t* first_entry = nullptr;
  if (first_unit < end && first_unit >= heads) {
    const KvUnit u = kv_unit(first_unit, heads, H);
    first_entry = entry_of_row(s, layer, row, u.h, u.kind);
  }
  pdl_wait();  // qkv from the kernel before
  __syncthreads();
  for (int unit = first_unit; unit < end; unit += kFusedWarps) {
    if (unit < heads) {
      for (int i = lane; i < half; i += 32)
        rotate_pair_by(src + unit * d, q + row * nq + unit * d, i, d, interleaved, sin_s[i], cos_s[i]);
      continue;
    }
    const auto [kind, h] = kv_unit(unit, heads, H);
    float* dst = (kind == kKeys ? k : v) + row * nkv + h * d;
    if (kind == kKeys) {
      for (int i = lane; i < half; i += 32)
        rotate_pair_by(src + nq + h * d, dst, i, d, interleaved, sin_s[i], cos_s[i]);
    } else {
      for (int i = lane; i < d; i += 32) dst[i] = src[nq + nkv + h * d + i];
    }
    __syncwarp();
    encode_to<T>(s, unit == first_unit ? first_entry : entry_of_row(s, layer, row, h, kind), dst, lane);
  }
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

void split_qkv_rope_kv_write(const DeviceStep& step, int layer, const float* qkv, int heads, const int64_t* positions,
                             const float* inv_freq, bool interleaved, float* q, float* k, float* v,
                             cudaStream_t stream) {
  if (step.rows == 0) return;
  check(step.head_dim <= kMaxHeadDim,
        "cuda split_qkv_rope_kv_write: head_dim " + std::to_string(step.head_dim) + " above 128");
  const int units = heads + 2 * step.num_kv_heads;
  const int per_block = step.rows >= kWholeRowBlocks ? units : kFusedWarps;
  const dim3 grid(static_cast<unsigned>(step.rows), static_cast<unsigned>((units + per_block - 1) / per_block));
  // A programmatic dependent of the projection before it (pdl.cuh).
  const auto launch = [&](auto kernel) {
    launch_pdl(kernel, grid, dim3(kFusedWarps * 32), 0, stream, "split_qkv_rope_kv_write_kernel", step, layer, qkv,
               heads, positions, inv_freq, interleaved, q, k, v, per_block);
  };
  switch (static_cast<KvDType>(step.dtype)) {
    case KvDType::F32: launch(split_qkv_rope_kv_write_kernel<KvDType::F32>); break;
    case KvDType::F16: launch(split_qkv_rope_kv_write_kernel<KvDType::F16>); break;
    case KvDType::BF16: launch(split_qkv_rope_kv_write_kernel<KvDType::BF16>); break;
    case KvDType::Q8_0: launch(split_qkv_rope_kv_write_kernel<KvDType::Q8_0>); break;
  }
}

void copy_entries(uint8_t* pool, int64_t page_bytes, int64_t entry_bytes, const EntryCopy* copies, int64_t count,
                  cudaStream_t stream) {
  if (count == 0) return;
  copy_entries_kernel<<<1, 256, 0, stream>>>(pool, page_bytes, entry_bytes, copies, count);
  check_launch("copy_entries_kernel");
}

}  // namespace podkv::cuda
