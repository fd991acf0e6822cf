// The merge of split-KV decode attention's chunks inside the tensor-core kernel (attention_decode.cu),
// where AttentionLaunch::merge_tickets is given: one launch a layer less than the separate merge
// (attention_decode_merge.cu), whose start and dependent round trips cost about 4 us of a batch-1
// layer's ~140 on an H200 (session 42's kernel durations).
//
// A block's kWarps warps are consecutive chunks of one unit (row, KV head, tile of query heads:
// splits % kWarps == 0). Each warp leaves its partial (partial_at's layout) in its own slots of the
// shared-memory ring, which its tiles no longer use; the block combines the kWarps partials of each
// head into one (combine_block), stored at block split split / kWarps of `partials`
// ([rows][H][splits / kWarps][partial_stride(d)] floats). Then one thread takes a ticket for the
// unit; the block that takes the last merges the unit's block partials in block order (merge_unit:
// the output and the anchor gate, as merge_kernel writes them) and clears the ticket for the next
// launch. The sums are those of the separate merge taken in two levels (float32 rounding apart),
// the same bits whichever block comes last.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/attention_decode.cuh"
#include "cuda/pdl.cuh"

namespace podkv::cuda::decode {

constexpr int kFoldThreads = kWarps * 32;
constexpr int kFoldBatch = 8;  // block partials a thread loads before it combines them

// Heads t < G of the block's kWarps partials (warp w's at ring + w * warp_bytes, head t at
// + t * partial_stride(D) floats) combined by their log-sum-exp into block split `block_split`.
// Thread i takes float4 i of the G x D / 4 outputs.
template <int D>
__device__ __forceinline__ void combine_block(const uint8_t* ring, int warp_bytes, int G, float* partials,
                                              int64_t slot, int H, int head0, int block_splits, int block_split) {
  constexpr int kQuads = D / 4;
  const int stride = static_cast<int>(partial_stride(D));
  for (int idx = threadIdx.x; idx < G * kQuads; idx += kFoldThreads) {
    const int t = idx / kQuads, q4 = idx - t * kQuads;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, reinterpret_cast<const float*>(ring + w * warp_bytes)[t * stride]);
    float sp = 0.0f, sd = 0.0f;
    float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float* p = reinterpret_cast<const float*>(ring + w * warp_bytes) + t * stride;
      const float wc = p[0] == -INFINITY ? 0.0f : expf(p[0] - m);
      const float4 v = *reinterpret_cast<const float4*>(p + kPartialHead + 4 * q4);
      sp += wc * p[1], sd += wc * p[2];
      x.x += wc * v.x, x.y += wc * v.y, x.z += wc * v.z, x.w += wc * v.w;
    }
    float* out = partial_at(partials, slot, H, head0 + t, block_splits, block_split, D);
    if (q4 == 0) *reinterpret_cast<float4*>(out) = make_float4(m, sp, sd, 0.0f);
    *reinterpret_cast<float4*>(out + kPartialHead + 4 * q4) = x;
  }
}

// Heads t < G of unit (slot, head0): its B block partials merged in block order into
// out_row[(head0 + t) * D ..] (out_row: the row's [H * D] outputs, 16-byte aligned) and, where not
// null, gates[head0 + t] (the proximal share). The partials were written by other blocks of this
// launch: L2 loads.
template <int D>
__device__ __forceinline__ void merge_unit(const float* partials, int64_t slot, int H, int head0, int G, int B,
                                           float* out_row, float* gates) {
  constexpr int kQuads = D / 4;
  const int stride = static_cast<int>(partial_stride(D));
  for (int idx = threadIdx.x; idx < G * kQuads; idx += kFoldThreads) {
    const int t = idx / kQuads, q4 = idx - t * kQuads;
    const float* base = partial_at(const_cast<float*>(partials), slot, H, head0 + t, B, 0, D);
    float m = -INFINITY, sp = 0.0f, sd = 0.0f;
    float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int c0 = 0; c0 < B; c0 += kFoldBatch) {
      // The batch's loads first (past B: block c0 again, unused), so that they are in flight together.
      float4 st[kFoldBatch], v[kFoldBatch];
#pragma unroll
      for (int k = 0; k < kFoldBatch; ++k) {
        const float* p = base + static_cast<int64_t>(c0 + k < B ? c0 + k : c0) * stride;
        st[k] = __ldcg(reinterpret_cast<const float4*>(p));
        v[k] = __ldcg(reinterpret_cast<const float4*>(p + kPartialHead + 4 * q4));
      }
      float mb = m;
#pragma unroll
      for (int k = 0; k < kFoldBatch; ++k)
        if (c0 + k < B) mb = fmaxf(mb, st[k].x);
      if (mb == -INFINITY) continue;  // no keys yet
      const float rescale = m == -INFINITY ? 0.0f : expf(m - mb);
      sp *= rescale, sd *= rescale;
      x.x *= rescale, x.y *= rescale, x.z *= rescale, x.w *= rescale;
#pragma unroll
      for (int k = 0; k < kFoldBatch; ++k) {
        if (c0 + k >= B || st[k].x == -INFINITY) continue;
        const float wc = expf(st[k].x - mb);
        sp += wc * st[k].y, sd += wc * st[k].z;
        x.x += wc * v[k].x, x.y += wc * v[k].y, x.z += wc * v[k].z, x.w += wc * v[k].w;
      }
      m = mb;
    }
    const float inv = 1.0f / (sp + sd);
    *reinterpret_cast<float4*>(out_row + (head0 + t) * D + 4 * q4) = make_float4(x.x * inv, x.y * inv, x.z * inv, x.w * inv);
    if (q4 == 0 && gates != nullptr) gates[head0 + t] = sp * inv;
  }
}

// The block's part after each warp left its partial in its ring slots: combine, ticket, and the merge
// by the unit's last block. Every thread of the block calls it.
template <int D>
__device__ __forceinline__ void fold_block(const uint8_t* ring, int warp_bytes, int G, float* partials, int64_t slot,
                                           int H, int head0, int splits, int split, unsigned* ticket, float* out_row,
                                           float* gates) {
  __syncthreads();  // every warp's partial in shared memory
  const int B = splits / kWarps;
  combine_block<D>(ring, warp_bytes, G, partials, slot, H, head0, B, split / kWarps);
  __threadfence();  // the block partial visible to the block that merges
  __syncthreads();
  // The kernel after this one (the decode chain) may start its blocks; it waits for this launch to end.
  pdl_launch_dependents();
  __shared__ bool last;
  if (threadIdx.x == 0) last = atomicAdd(ticket, 1u) == static_cast<unsigned>(B - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();  // the other blocks' partials, seen through their tickets
  merge_unit<D>(partials, slot, H, head0, G, B, out_row, gates);
  if (threadIdx.x == 0) *ticket = 0;  // every block of the unit has taken its ticket
}

}  // namespace podkv::cuda::decode
