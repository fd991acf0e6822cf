// The merge of split-KV decode attention's chunks (attention_decode.cu): per (row, query head), the
// chunks' partials combined by their log-sum-exp into the output and the anchor gate.
#include <cmath>
#include <cstdlib>
#include <string>

#include "cuda/attention_decode.cuh"
#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"
#include "cuda/pdl.cuh"

namespace podkv::cuda {

namespace {

using namespace decode;

// One block per (row, query head): the chunks' partials combined. Each chunk's weight
// exp(max_c - max) goes to shared memory first; then kThreads / 128 groups of threads each sum
// their share of the chunks for every output element: with 512 threads (many chunks: batch 1,
// 64 chunks at 4K keys) a thread waits on a quarter of the chunks' loads.
// kPrefetch > 0 (splits <= kPrefetch x the groups): a thread loads its chunks' output elements
// before the statistics' reductions, so that the block waits on global memory once, not twice
// (at batch 1 the merge is a few dependent round trips to L2 long, not bandwidth-bound).
template <int kThreads, int kPrefetch>
__global__ void __launch_bounds__(kThreads)
    merge_kernel(int num_heads, int d, int layer, int64_t rows, int splits, const float* partials, float* out,
                 float* all_gates, const int32_t* decode_rows) {
  const int64_t slot = blockIdx.x, row = decode_rows != nullptr ? decode_rows[slot] : slot;
  const int i = blockIdx.y;
  // A programmatic dependent after this kernel (the decode chain, unless PODKV_CUDA_CHAIN_PDL=0) may
  // start its blocks now: they wait for this kernel to finish before they read its output (pdl.cuh).
  pdl_launch_dependents();
  pdl_wait();  // the partials of the kernel before (pdl.cuh)
  __shared__ float weight[kMaxMergeSplits];
  constexpr int kGroups = kThreads / kMaxHeadDim;
  constexpr int kPerThread = kMaxMergeSplits / kThreads;
  __shared__ float reduce[3][kThreads / 32];
  __shared__ float sums[kGroups][kMaxHeadDim];
  const float* base = partial_at(const_cast<float*>(partials), slot, num_heads, i, splits, 0, d);
  const int64_t stride = partial_stride(d);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = kThreads / 32;
  // Group g sums chunks g, g + kGroups, ... for element t.
  const int g = threadIdx.x / kMaxHeadDim, t = threadIdx.x % kMaxHeadDim;
  float early[kPrefetch > 0 ? kPrefetch : 1];
#pragma unroll
  for (int k = 0; k < kPrefetch; ++k) {
    const int c = g + k * kGroups;
    early[k] = c < splits && t < d ? base[c * stride + kPartialHead + t] : 0.0f;
  }
  // Each chunk's (max, proximal sum, distant sum), read once.
  float cm[kPerThread], cp[kPerThread], cd[kPerThread];
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int c = threadIdx.x + k * kThreads;
    cm[k] = -INFINITY, cp[k] = 0.0f, cd[k] = 0.0f;
    if (c < splits) cm[k] = base[c * stride], cp[k] = base[c * stride + 1], cd[k] = base[c * stride + 2];
    m = fmaxf(m, cm[k]);
  }
  m = warp_max(m);
  if (lane == 0) reduce[0][warp] = m;
  __syncthreads();
  m = -INFINITY;
  for (int w = 0; w < warps; ++w) m = fmaxf(m, reduce[0][w]);
  float sp = 0.0f, sd = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int c = threadIdx.x + k * kThreads;
    if (c >= splits) continue;
    const float wc = cm[k] == -INFINITY ? 0.0f : expf(cm[k] - m);
    weight[c] = wc;
    sp += wc * cp[k], sd += wc * cd[k];
  }
  sp = warp_sum(sp), sd = warp_sum(sd);
  if (lane == 0) reduce[1][warp] = sp, reduce[2][warp] = sd;
  __syncthreads();
  sp = 0.0f, sd = 0.0f;
  for (int w = 0; w < warps; ++w) sp += reduce[1][w], sd += reduce[2][w];
  const float inv = 1.0f / (sp + sd);
  if (t < d) {
    float x = 0.0f;
    if constexpr (kPrefetch > 0) {
#pragma unroll
      for (int k = 0; k < kPrefetch; ++k) {
        const int c = g + k * kGroups;
        if (c < splits) x += weight[c] * early[k];
      }
    } else {
#pragma unroll 8
      for (int c = g; c < splits; c += kGroups) x += weight[c] * base[c * stride + kPartialHead + t];
    }
    sums[g][t] = x;
  }
  __syncthreads();
  if (g == 0 && t < d) {
    float x = 0.0f;
#pragma unroll
    for (int k = 0; k < kGroups; ++k) x += sums[k][t];
    out[(row * num_heads + i) * d + t] = x * inv;
  }
  if (threadIdx.x == 0 && all_gates != nullptr) all_gates[(static_cast<int64_t>(layer) * rows + row) * num_heads + i] = sp * inv;
}

// PODKV_CUDA_MERGE_PREFETCH=0: the merge loads its chunks' outputs after the statistics (to compare).
bool merge_prefetch() {
  static const bool on = [] {
    const char* e = std::getenv("PODKV_CUDA_MERGE_PREFETCH");
    return e == nullptr || std::string(e) != "0";
  }();
  return on;
}

}  // namespace

namespace decode {

void launch_merge(const DeviceStep& step, const AttentionLaunch& launch, int splits, const float* partials,
                  cudaStream_t stream) {
  const dim3 merge_grid(static_cast<unsigned>(step.num_decode_rows), static_cast<unsigned>(launch.num_heads));
  // A programmatic dependent of the attention kernel (pdl.cuh): its blocks wait at their start.
  auto merge = [&](auto kernel, int threads) {
    launch_pdl(PdlUse::kDecode, kernel, merge_grid, dim3(threads), 0, stream, "merge_kernel", launch.num_heads,
               step.head_dim, launch.layer, step.rows, splits, partials, launch.out, launch.all_gates,
               step.decode_rows);
  };
  // With the prefetch: up to 128 chunks over 4 groups (32 each), up to 256 (64 each: two attention
  // blocks per multiprocessor give a 4K row 129 or more chunks), up to 16 over one.
  const bool prefetch = merge_prefetch();
  if (splits >= 16 && prefetch && splits <= 128) merge(merge_kernel<512, 32>, 512);
  else if (splits >= 16 && prefetch && splits <= 256) merge(merge_kernel<512, 64>, 512);
  else if (splits >= 16) merge(merge_kernel<512, 0>, 512);
  else if (prefetch) merge(merge_kernel<128, 16>, 128);
  else merge(merge_kernel<128, 0>, 128);
}

}  // namespace decode

}  // namespace podkv::cuda
