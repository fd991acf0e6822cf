// The merge of split-KV decode attention's chunks for one (row, query head), as a block's device
// function: merge_kernel (attention_decode_merge.cu) runs it with one block per (row, head) and the
// whole head_dim, decode_chain's first stage (decode_chain.cu) with each block a slice of a head's
// elements, so that a row's 32 heads take as many of the chain's blocks as they can.
#pragma once

#include <cmath>

#include "cuda/attention_decode.cuh"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"

namespace podkv::cuda::decode {

// Elements [e0, e0 + kElems) of head i of decode row `slot`, by the block's kThreads threads
// (kThreads / kElems groups; group g sums chunks g, g + groups, ... for element e0 + t):
//  - each chunk's weight exp(max_c - max) goes to shared memory first (kThreads threads read the
//    chunks' (max, proximal sum, distant sum), up to kMaxMergeSplits);
//  - a thread loads its first kPrefetch chunks' output elements before the statistics' reductions,
//    so that the block waits on global memory once, not twice (a merge at batch 1 is a few dependent
//    round trips to L2 long, not bandwidth-bound); chunks past those are loaded after;
//  - the groups' sums are added in group order, and the slice holding element 0 writes the gate.
// The block may call it again for another slice: the last barrier keeps shared memory until all read.
template <int kThreads, int kElems, int kPrefetch>
__device__ __forceinline__ void merge_head(const DecodeMerge& m, int64_t slot, int i, int e0) {
  static_assert(kThreads % kElems == 0 && kThreads % 32 == 0, "whole groups and warps");
  constexpr int kGroups = kThreads / kElems;
  constexpr int kPerThread = (kMaxMergeSplits + kThreads - 1) / kThreads;
  __shared__ float weight[kMaxMergeSplits];
  __shared__ float reduce[3][kThreads / 32];
  __shared__ float sums[kGroups][kElems];
  const int64_t row = m.decode_rows != nullptr ? m.decode_rows[slot] : slot;
  const int d = m.head_dim, splits = m.splits;
  const float* base = partial_at(const_cast<float*>(m.partials), slot, m.num_heads, i, splits, 0, d);
  const int64_t stride = partial_stride(d);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = kThreads / 32;
  const int g = threadIdx.x / kElems, t = threadIdx.x % kElems, e = e0 + t;
  float early[kPrefetch > 0 ? kPrefetch : 1];
#pragma unroll
  for (int k = 0; k < kPrefetch; ++k) {
    const int c = g + k * kGroups;
    early[k] = c < splits && e < d ? base[c * stride + kPartialHead + e] : 0.0f;
  }
  // Each chunk's (max, proximal sum, distant sum), read once.
  float cm[kPerThread], cp[kPerThread], cd[kPerThread];
  float mx = -INFINITY;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int c = threadIdx.x + k * kThreads;
    cm[k] = -INFINITY, cp[k] = 0.0f, cd[k] = 0.0f;
    if (c < splits) cm[k] = base[c * stride], cp[k] = base[c * stride + 1], cd[k] = base[c * stride + 2];
    mx = fmaxf(mx, cm[k]);
  }
  mx = warp_max(mx);
  if (lane == 0) reduce[0][warp] = mx;
  __syncthreads();
  mx = -INFINITY;
  for (int w = 0; w < warps; ++w) mx = fmaxf(mx, reduce[0][w]);
  float sp = 0.0f, sd = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int c = threadIdx.x + k * kThreads;
    if (c >= splits) continue;
    const float wc = cm[k] == -INFINITY ? 0.0f : expf(cm[k] - mx);
    weight[c] = wc;
    sp += wc * cp[k], sd += wc * cd[k];
  }
  sp = warp_sum(sp), sd = warp_sum(sd);
  if (lane == 0) reduce[1][warp] = sp, reduce[2][warp] = sd;
  __syncthreads();
  sp = 0.0f, sd = 0.0f;
  for (int w = 0; w < warps; ++w) sp += reduce[1][w], sd += reduce[2][w];
  const float inv = 1.0f / (sp + sd);
  if (e < d) {
    float x = 0.0f;
#pragma unroll
    for (int k = 0; k < kPrefetch; ++k) {
      const int c = g + k * kGroups;
      if (c < splits) x += weight[c] * early[k];
    }
#pragma unroll 8
    for (int c = g + kPrefetch * kGroups; c < splits; c += kGroups) x += weight[c] * base[c * stride + kPartialHead + e];
    sums[g][t] = x;
  }
  __syncthreads();
  if (g == 0 && e < d) {
    float x = 0.0f;
#pragma unroll
    for (int k = 0; k < kGroups; ++k) x += sums[k][t];
    m.out[(row * m.num_heads + i) * d + e] = x * inv;
  }
  if (threadIdx.x == 0 && e0 == 0 && m.all_gates != nullptr)
    m.all_gates[(static_cast<int64_t>(m.layer) * m.rows + row) * m.num_heads + i] = sp * inv;
  __syncthreads();
}

}  // namespace podkv::cuda::decode
