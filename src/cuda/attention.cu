// Attention of one layer over the paged view, PoD's way (ops/attention.h):
// per query, a proximal part (sink + recent window, the layer's own keys) and
// a distant part (keys from the stream the rules name: the block anchor's for
// PoD, the selection store for H2O/SnapKV), each an online softmax, merged by
// their log-sum-exp; values are always read from the value rules' layer. The
// proximal share of the mass is the gate; with tau < 1 a head skips its
// distant part when the anchor layer's gate for the same row and head is at
// least tau. Scored queries make a second pass over their keys and add their
// final probabilities to the step's score output (atomics: the query heads of
// a KV head add to one region).
//
// One block per (row, query head); its 8 warps take every 8th key of a part,
// each warp holding a running (max, sum, output) with the head_dim vector
// spread over its lanes (4 elements per lane, head_dim <= 128); the warps'
// partials are merged in shared memory. Decode and prefill rows run in the
// same launch. (A split-KV decode kernel and tiled prefill are the next step.)
#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"
#include "cuda/paged.cuh"
#include "kv/token_classes.h"

namespace podkv::cuda {

namespace {

constexpr int kWarps = 8;

// Keys [begin, end) of a part (positions or store slots) and where their scores go.
struct Span {
  int64_t begin = 0, end = 0;
  DeviceStream keys, values;
  int64_t score_base = 0;  // the score of key j is region[j - score_base]
  bool scored = false;
};

struct WarpPartial {
  float max = -INFINITY, sum = 0.0f;
  float acc[kLaneElems] = {};
};

template <KvDType T>
__device__ __forceinline__ float key_score(const DeviceStep& s, const DeviceStream& keys, int64_t j,
                                           const float (&q)[kLaneElems], float scale, int lane) {
  float k[kLaneElems];
  decode_entry<T>(entry_at(s, keys, j), lane, s.head_dim, k);
  float dot = 0.0f;
#pragma unroll
  for (int c = 0; c < kLaneElems; ++c) dot += q[c] * k[c];
  return warp_sum(dot) * scale;
}

template <KvDType T>
__device__ void accumulate(const DeviceStep& s, const Span* spans, int count, const float (&q)[kLaneElems],
                           float scale, int warp, int lane, WarpPartial& part) {
  for (int n = 0; n < count; ++n) {
    const Span& span = spans[n];
    for (int64_t j = span.begin + warp; j < span.end; j += kWarps) {
      const float score = key_score<T>(s, span.keys, j, q, scale, lane);
      float v[kLaneElems];
      decode_entry<T>(entry_at(s, span.values, j), lane, s.head_dim, v);
      const float m = fmaxf(part.max, score);
      const float correction = expf(part.max - m);  // 0 for the first key
      const float p = expf(score - m);
      part.sum = part.sum * correction + p;
#pragma unroll
      for (int c = 0; c < kLaneElems; ++c) part.acc[c] = part.acc[c] * correction + p * v[c];
      part.max = m;
    }
  }
}

// The block's partials merged: max, sum of exp(score - max), and acc [d] (shared memory).
__device__ void merge_warps(const WarpPartial& part, int warp, int lane, int d, float* acc, float& max, float& sum) {
  __shared__ float warp_max_[kWarps], warp_sum_[kWarps];
  __shared__ float warp_acc[kWarps][kMaxHeadDim];
  __syncthreads();  // a previous merge has been read
  if (lane == 0) {
    warp_max_[warp] = part.max;
    warp_sum_[warp] = part.sum;
  }
#pragma unroll
  for (int c = 0; c < kLaneElems; ++c)
    if (lane + 32 * c < d) warp_acc[warp][lane + 32 * c] = part.acc[c];
  __syncthreads();
  max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) max = fmaxf(max, warp_max_[w]);
  float weight[kWarps];
  sum = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = warp_max_[w] > -INFINITY ? expf(warp_max_[w] - max) : 0.0f;
    sum += warp_sum_[w] * weight[w];
  }
  for (int t = threadIdx.x; t < d; t += blockDim.x) {
    float a = 0.0f;
    for (int w = 0; w < kWarps; ++w) a += weight[w] > 0.0f ? warp_acc[w][t] * weight[w] : 0.0f;
    acc[t] = a;
  }
  __syncthreads();
}

// region[j - base] += exp(score_j - max) * factor for the scored spans' keys.
template <KvDType T>
__device__ void add_scores(const DeviceStep& s, const Span* spans, int count, const float (&q)[kLaneElems],
                           float scale, float max, float factor, float* region, int warp, int lane) {
  for (int n = 0; n < count; ++n) {
    const Span& span = spans[n];
    if (!span.scored) continue;
    for (int64_t j = span.begin + warp; j < span.end; j += kWarps) {
      const float score = key_score<T>(s, span.keys, j, q, scale, lane);
      if (lane == 0) atomicAdd(region + (j - span.score_base), expf(score - max) * factor);
    }
  }
}

template <KvDType T>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(DeviceStep s, AttentionLaunch a, const float* q) {
  const int64_t row = blockIdx.x;
  const int i = blockIdx.y;  // query head
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int H = a.num_heads, groups = H / s.num_kv_heads, h = i / groups, d = s.head_dim, layer = a.layer;
  const int b = s.row_entry[row];
  const int64_t pos = s.first_pos[b] + (row - s.row_begin[b]);
  float qv[kLaneElems];
  const float* qr = q + (row * H + i) * d;
#pragma unroll
  for (int c = 0; c < kLaneElems; ++c) qv[c] = lane + 32 * c < d ? qr[lane + 32 * c] : 0.0f;

  const KvRule kr = s.key_rules[layer * s.num_kv_heads + h];
  const KvRule vr = s.value_rules[layer * s.num_kv_heads + h];
  const bool split = s.recent_tokens > 0;
  const int group = kr.distant_group;
  const bool score_this = a.scores != nullptr && s.score_from != nullptr && pos >= s.score_from[b] && group >= 0;
  float* region = score_this ? a.scores + s.score_indptr[b * s.num_groups + group] : nullptr;
  const int64_t store_size = group >= 0 ? s.store_size[b * s.num_groups + group] : 0;
  const int64_t window_base = s.window_base[b];
  // Token classes for query position pos (pod-method.md); window scores sit after the store slots.
  const int64_t s_end = sink_end(pos, s.sink_tokens, split);
  const int64_t r_begin = recent_begin(pos, s.sink_tokens, s.recent_tokens, split);
  const int64_t window_score_base = window_base - store_size;

  Span prox[2];
  int num_prox = 0;
  {
    const DeviceStream k =
        stream_of(s, b, kKeys, source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, false), h);
    const DeviceStream v =
        stream_of(s, b, kValues, source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, false), h);
    if (s_end > 0) prox[num_prox++] = Span{0, s_end, k, v, 0, false};
    prox[num_prox++] = Span{r_begin, pos + 1, k, v, window_score_base, score_this};
  }
  const bool distant = split && r_begin > s_end;
  const bool shared = kr.retention == kRetainWindow || kr.retention == kRetainNone;
  const bool skip = distant && shared && kr.distant_source >= 0 && a.tau < 1.0f && a.all_gates != nullptr &&
                    a.all_gates[(kr.distant_source * s.rows + row) * H + i] >= a.tau;
  const int k_layer = source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, true);
  const int v_layer = source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, true);
  Span dist[2];
  int num_dist = 0;
  if (distant && !skip && k_layer >= 0 && v_layer >= 0) {
    const DeviceStream k = stream_of(s, b, kKeys, k_layer, h);
    const DeviceStream v = stream_of(s, b, kValues, v_layer, h);
    if (group < 0) {
      dist[num_dist++] = Span{s_end, r_begin, k, v, 0, false};
    } else {
      // Kept tokens that left the window, then the window's distant part.
      dist[num_dist++] = Span{0, store_size, stream_of(s, b, kKeyStore, k_layer, h),
                              stream_of(s, b, kValueStore, v_layer, h), 0, score_this};
      const int64_t begin = s_end > window_base ? s_end : window_base;
      if (r_begin > begin) dist[num_dist++] = Span{begin, r_begin, k, v, window_score_base, score_this};
    }
  }

  __shared__ float prox_acc[kMaxHeadDim], dist_acc[kMaxHeadDim];
  float prox_max, prox_sum, dist_max = -INFINITY, dist_sum = 0.0f;
  {
    WarpPartial part;
    accumulate<T>(s, prox, num_prox, qv, a.scale, warp, lane, part);
    merge_warps(part, warp, lane, d, prox_acc, prox_max, prox_sum);
  }
  if (num_dist > 0) {  // uniform over the block
    WarpPartial part;
    accumulate<T>(s, dist, num_dist, qv, a.scale, warp, lane, part);
    merge_warps(part, warp, lane, d, dist_acc, dist_max, dist_sum);
  }
  const float m = fmaxf(prox_max, dist_max);
  const float wp = prox_sum > 0.0f ? expf(prox_max - m) : 0.0f;
  const float wd = dist_sum > 0.0f ? expf(dist_max - m) : 0.0f;
  const float sp = prox_sum * wp, sd = dist_sum * wd;
  const float inv = 1.0f / (sp + sd);
  float* o = a.out + (row * H + i) * d;
  for (int t = threadIdx.x; t < d; t += blockDim.x) o[t] = (prox_acc[t] * wp + (num_dist > 0 ? dist_acc[t] * wd : 0.0f)) * inv;
  if (threadIdx.x == 0) {
    if (a.all_gates != nullptr) a.all_gates[(static_cast<int64_t>(layer) * s.rows + row) * H + i] = sp * inv;
    if (skip) atomicAdd(a.skipped, 1ULL);
  }
  if (score_this) {
    add_scores<T>(s, prox, num_prox, qv, a.scale, prox_max, wp * inv, region, warp, lane);
    add_scores<T>(s, dist, num_dist, qv, a.scale, dist_max, wd * inv, region, warp, lane);
  }
}

}  // namespace

void attention(const DeviceStep& step, const AttentionLaunch& launch, const float* q, cudaStream_t stream) {
  if (step.rows == 0) return;
  check(step.head_dim <= kMaxHeadDim,
        "cuda attention: head_dim " + std::to_string(step.head_dim) + " is above the kernel's 128");
  const dim3 grid(static_cast<unsigned>(step.rows), static_cast<unsigned>(launch.num_heads));
  const int threads = kWarps * 32;
  switch (static_cast<KvDType>(step.dtype)) {
    case KvDType::F32: attention_kernel<KvDType::F32><<<grid, threads, 0, stream>>>(step, launch, q); break;
    case KvDType::F16: attention_kernel<KvDType::F16><<<grid, threads, 0, stream>>>(step, launch, q); break;
    case KvDType::BF16: attention_kernel<KvDType::BF16><<<grid, threads, 0, stream>>>(step, launch, q); break;
    case KvDType::Q8_0: attention_kernel<KvDType::Q8_0><<<grid, threads, 0, stream>>>(step, launch, q); break;
  }
  check_launch("attention_kernel");
}

}  // namespace podkv::cuda
