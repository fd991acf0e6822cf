// What the split-KV decode attention's three files share: the block shape, a row's key spans and
// where a chunk's partial lies. attention_decode.cu has the entry (decode_attention) and the
// tensor-core kernel, attention_decode_simt.cu the kernel on the CUDA cores (every other entry type
// and shape), attention_decode_merge.cu the merge of the chunks' partials.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/device_step.h"
#include "cuda/paged.cuh"
#include "kv/token_classes.h"

namespace podkv::cuda::decode {

constexpr int kWarps = 4;  // per block, in both kernels
constexpr int kMaxSpans = 4;
constexpr int kMaxMergeSplits = 1024;  // chunks per row, at most (the merge keeps their weights in shared memory)

struct Span {
  int64_t begin = 0, end = 0;  // positions or store slots
  DeviceStream keys, values;
  bool distant = false;
};

// spans[n] = {begin, end, keys, values, distant}, field by field: a whole Span assigned at an index
// not known at compile time went to local memory one byte at a time (the aggregate copy lost its
// alignment: 56 byte stores and 49 shifts per span in the PTX), and row_spans runs at the start of
// every decode warp.
__device__ __forceinline__ void put_span(Span (&spans)[kMaxSpans], int n, int64_t begin, int64_t end,
                                         const DeviceStream& keys, const DeviceStream& values, bool distant) {
  Span& sp = spans[n];
  sp.begin = begin, sp.end = end;
  sp.keys.pages = keys.pages, sp.keys.num_pages = keys.num_pages;
  sp.values.pages = values.pages, sp.values.num_pages = values.num_pages;
  sp.distant = distant;
}

// A chunk's partial of one (row, query head): (max, proximal sum, distant sum, unused), then the d
// unnormalised outputs, kPartialHead floats on ([rows][H][splits][partial_stride(d)] floats), so that
// with d % 4 == 0 the outputs are 16-byte aligned (the tensor-core kernel stores them as float4: its
// per-element stores of 131-float rows held its warps at exit, waiting for the stores to drain).
constexpr int kPartialHead = 4;
__host__ __device__ inline int64_t partial_stride(int d) { return d + kPartialHead; }

__device__ __forceinline__ float* partial_at(float* partials, int64_t row, int H, int i, int splits, int split, int d) {
  return partials + ((row * H + i) * splits + split) * partial_stride(d);
}

// The keys a decode row reads, as spans of positions or store slots (attention.cu's, without
// scores): the sink and the recent window from the layer's own streams, then the distant part from
// the anchor's (or the selection store, then the window's distant part). Returns the count.
__device__ inline int row_spans(const DeviceStep& s, int layer, int b, int h, int64_t pos, Span (&spans)[kMaxSpans],
                                bool& distant) {
  const int Hkv = s.num_kv_heads;
  const KvRule kr = s.key_rules[layer * Hkv + h];
  const KvRule vr = s.value_rules[layer * Hkv + h];
  const bool split_classes = s.recent_tokens > 0;
  const int group = kr.distant_group;
  const int64_t store_size = group >= 0 ? s.store_size[b * s.num_groups + group] : 0;
  const int64_t s_end = sink_end(pos, s.sink_tokens, split_classes);
  const int64_t r_begin = recent_begin(pos, s.sink_tokens, s.recent_tokens, split_classes);
  int count = 0;
  {
    const DeviceStream k = stream_of(
        s, b, kKeys, source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, false), h);
    const DeviceStream v = stream_of(
        s, b, kValues, source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, false), h);
    if (s_end > 0) put_span(spans, count++, 0, s_end, k, v, false);
    put_span(spans, count++, r_begin, pos + 1, k, v, false);
  }
  distant = split_classes && r_begin > s_end;
  const int k_layer = source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, true);
  const int v_layer = source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, true);
  if (distant && k_layer >= 0 && v_layer >= 0) {
    const DeviceStream k = stream_of(s, b, kKeys, k_layer, h);
    const DeviceStream v = stream_of(s, b, kValues, v_layer, h);
    if (group < 0) {
      put_span(spans, count++, s_end, r_begin, k, v, true);
    } else {
      put_span(spans, count++, 0, store_size, stream_of(s, b, kKeyStore, k_layer, h),
               stream_of(s, b, kValueStore, v_layer, h), true);
      const int64_t window_base = s.window_base[b];
      const int64_t begin = s_end > window_base ? s_end : window_base;
      if (r_begin > begin) put_span(spans, count++, begin, r_begin, k, v, true);
    }
  }
  return count;
}

// The decode kernel on the CUDA cores (attention_decode_simt.cu) over `splits` chunks, into partials.
void launch_simt(const DeviceStep& step, const AttentionLaunch& launch, const float* q, int splits, float* partials,
                 cudaStream_t stream);
// The merge of the chunks' partials into launch.out (and launch.all_gates), after either kernel.
void launch_merge(const DeviceStep& step, const AttentionLaunch& launch, int splits, const float* partials,
                  cudaStream_t stream);

}  // namespace podkv::cuda::decode
