// Split-KV ("flash-decoding") attention of one layer over the paged view, for
// launches that need no selection scores and head_dim a multiple of 8.
//
// The keys a query row reads (pod-method.md's classes, as attention.cu lists
// them: proximal spans from the layer's own streams, distant spans from the
// anchor's keys or the selection store) are numbered in one virtual range and
// cut into `splits` chunks; each chunk gives a partial (max, proximal sum,
// distant sum, unnormalised output) per (row, query head), and a merge kernel
// combines the chunks by their log-sum-exp and writes the output and the gate.
// The query heads of a KV head share every key and value load (GQA/MQA).
// A head whose anchor gate is >= tau masks its distant keys (counted once).
// Two kernels take the chunks:
//  - decode_mma_kernel (bf16 entries, no selection stores, head_dim a multiple
//    of 32): one warp per chunk, on the tensor cores (warp_attention.cuh), the
//    KV head's query heads as the mma's 16 rows, each lane's chunks of keys and
//    values copied ahead through a shared-memory ring (cp.async), Q and P split
//    into bf16 hi + lo;
//  - decode_kernel (every other entry type and shape, on the CUDA cores): one
//    block of 4 warps per (row, KV head, group tile of up to 8 query heads,
//    chunk), taking 32-key tiles in turn:
//      scores: lane j reads key j of the tile whole (16-byte loads where the
//              entry type allows) and dots it with each head's query (shared memory);
//      softmax: per head a running max, and the proximal and distant sums apart;
//      values:  lane l holds output elements l, l + 32, ... of every head;
//    the block's warps merged in shared memory into the chunk's partial.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"
#include "cuda/paged.cuh"
#include "cuda/pdl.cuh"
#include "cuda/prefill_warp.cuh"
#include "cuda/sm90a/barriers.cuh"
#include "cuda/warp_attention.cuh"
#include "kv/token_classes.h"

namespace podkv::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kGroupTile = 8;  // query heads per block
constexpr int kMaxSpans = 4;

struct Span {
  int64_t begin = 0, end = 0;  // positions or store slots
  DeviceStream keys, values;
  bool distant = false;
};

// Elements [8c, 8c + 8) of entry e.
template <KvDType T>
__device__ __forceinline__ void load8(const uint8_t* e, int c, float (&x)[8]) {
  if constexpr (T == KvDType::F32) {
    const float4* p = reinterpret_cast<const float4*>(e) + 2 * c;
    const float4 a = p[0], b = p[1];
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  } else if constexpr (T == KvDType::F16) {
    const uint4 p = reinterpret_cast<const uint4*>(e)[c];
    const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      x[2 * i] = f.x, x[2 * i + 1] = f.y;
    }
  } else if constexpr (T == KvDType::BF16) {
    const uint4 p = reinterpret_cast<const uint4*>(e)[c];
    const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) x[2 * i] = __uint_as_float(w[i] << 16), x[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  } else {
    // Blocks of 32 values at 34-byte strides (the last one may be shorter): an f16 scale, then int8s.
    const int first = 8 * c;
    const uint8_t* block = e + (first / 32) * 34;
    const float scale = f16_bytes_to_f32(block);
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = scale * static_cast<float>(static_cast<int8_t>(block[2 + first % 32 + i]));
  }
}

// Output elements of a lane: with d % 32 == 0 the contiguous run [lane * E, lane * E + E), E = d / 32
// (bf16 and f16 rows of 128 read 8 bytes per lane in one load); otherwise lane, lane + 32, ...
__device__ __forceinline__ int lane_element(int lane, int c, int d) {
  return d % 32 == 0 ? lane * (d / 32) + c : lane + 32 * c;
}

template <KvDType T>
__device__ __forceinline__ void load_lane(const uint8_t* e, int lane, int d, float (&x)[kLaneElems]) {
  if (e == nullptr) {
#pragma unroll
    for (int c = 0; c < kLaneElems; ++c) x[c] = 0.0f;
    return;
  }
  if (d == 128 && (T == KvDType::BF16 || T == KvDType::F16)) {
    const uint2 p = reinterpret_cast<const uint2*>(e)[lane];
    if constexpr (T == KvDType::BF16) {
      x[0] = __uint_as_float(p.x << 16), x[1] = __uint_as_float(p.x & 0xffff0000u);
      x[2] = __uint_as_float(p.y << 16), x[3] = __uint_as_float(p.y & 0xffff0000u);
    } else {
      const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&p.x));
      const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&p.y));
      x[0] = a.x, x[1] = a.y, x[2] = b.x, x[3] = b.y;
    }
    return;
  }
  if (d == 128 && T == KvDType::F32) {
    const float4 p = reinterpret_cast<const float4*>(e)[lane];
    x[0] = p.x, x[1] = p.y, x[2] = p.z, x[3] = p.w;
    return;
  }
  if (d % 32 != 0) {
    decode_entry<T>(e, lane, d, x);
    return;
  }
#pragma unroll
  for (int c = 0; c < kLaneElems; ++c) {
    x[c] = 0.0f;
    if (c >= d / 32) continue;
    const int i = lane_element(lane, c, d);
    if constexpr (T == KvDType::F32) x[c] = reinterpret_cast<const float*>(e)[i];
    else if constexpr (T == KvDType::F16) x[c] = __half2float(reinterpret_cast<const __half*>(e)[i]);
    else if constexpr (T == KvDType::BF16) x[c] = bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(e)[i]);
    else x[c] = f16_bytes_to_f32(e + (i / 32) * 34) * static_cast<float>(static_cast<int8_t>(e[(i / 32) * 34 + 2 + i % 32]));
  }
}

// Shared rows of a key or value tile: the entry rounded up to 16 bytes plus 16, so that lanes copying
// their rows 16 bytes at a time hit different banks.
__host__ __device__ inline int64_t value_row_stride(int64_t entry_bytes) { return (entry_bytes + 15) / 16 * 16 + 16; }

// Copies one entry (bytes) in the widest units its size and address allow.
__device__ __forceinline__ void copy_row(uint8_t* dst, const uint8_t* src, int bytes) {
  if (bytes % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
#pragma unroll 16
    for (int i = 0; i < bytes / 16; ++i) reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
  } else if (bytes % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 8 == 0) {
#pragma unroll 4
    for (int i = 0; i < bytes / 8; ++i) reinterpret_cast<uint2*>(dst)[i] = reinterpret_cast<const uint2*>(src)[i];
  } else {
    for (int i = 0; i < bytes; ++i) dst[i] = src[i];
  }
}

__device__ __forceinline__ float* partial_at(float* partials, int64_t row, int H, int i, int splits, int split, int d) {
  return partials + ((row * H + i) * splits + split) * static_cast<int64_t>(d + 3);
}

// The keys a decode row reads, as spans of positions or store slots (attention.cu's, without
// scores): the sink and the recent window from the layer's own streams, then the distant part from
// the anchor's (or the selection store, then the window's distant part). Returns the count.
__device__ int row_spans(const DeviceStep& s, int layer, int b, int h, int64_t pos, Span (&spans)[kMaxSpans],
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
    if (s_end > 0) spans[count++] = Span{0, s_end, k, v, false};
    spans[count++] = Span{r_begin, pos + 1, k, v, false};
  }
  distant = split_classes && r_begin > s_end;
  const int k_layer = source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, true);
  const int v_layer = source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, true);
  if (distant && k_layer >= 0 && v_layer >= 0) {
    const DeviceStream k = stream_of(s, b, kKeys, k_layer, h);
    const DeviceStream v = stream_of(s, b, kValues, v_layer, h);
    if (group < 0) {
      spans[count++] = Span{s_end, r_begin, k, v, true};
    } else {
      spans[count++] =
          Span{0, store_size, stream_of(s, b, kKeyStore, k_layer, h), stream_of(s, b, kValueStore, v_layer, h), true};
      const int64_t window_base = s.window_base[b];
      const int64_t begin = s_end > window_base ? s_end : window_base;
      if (r_begin > begin) spans[count++] = Span{begin, r_begin, k, v, true};
    }
  }
  return count;
}

template <KvDType T>
__global__ void __launch_bounds__(kWarps * 32)
    decode_kernel(DeviceStep s, AttentionLaunch a, const float* q, int splits, float* partials) {
  const int64_t slot = blockIdx.x, row = s.decode_rows != nullptr ? s.decode_rows[slot] : slot;
  const int H = a.num_heads, Hkv = s.num_kv_heads, groups = H / Hkv, d = s.head_dim, layer = a.layer;
  const int tiles_per_head = (groups + kGroupTile - 1) / kGroupTile;
  const int h = blockIdx.y / tiles_per_head;
  const int head0 = h * groups + (blockIdx.y % tiles_per_head) * kGroupTile;
  const int G = min(kGroupTile, h * groups + groups - head0);
  const int split = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = s.row_entry[row];
  const int64_t pos = s.first_pos[b] + (row - s.row_begin[b]);

  const KvRule kr = s.key_rules[layer * Hkv + h];
  Span spans[kMaxSpans];
  bool distant = false;
  const int count = row_spans(s, layer, b, h, pos, spans, distant);
  const bool shared = kr.retention == kRetainWindow || kr.retention == kRetainNone;
  extern __shared__ __align__(16) uint8_t tiles_smem[];  // keys, then values: [kWarps * 32][v_stride] each
  const int64_t v_stride = value_row_stride(s.entry_bytes);
  uint8_t* k_tile = tiles_smem;
  uint8_t* v_tile = tiles_smem + static_cast<size_t>(kWarps) * 32 * v_stride;
  // Heads whose anchor's gate reached tau skip their distant keys.
  __shared__ bool skip_s[kGroupTile];
  __shared__ float q_s[kGroupTile][kMaxHeadDim];
  __shared__ float p_s[kWarps][kGroupTile][32];
  if (threadIdx.x < G) {
    const int i = head0 + threadIdx.x;
    const bool skip = distant && shared && kr.distant_source >= 0 && a.tau < 1.0f && a.all_gates != nullptr &&
                      a.all_gates[(kr.distant_source * s.rows + row) * H + i] >= a.tau;
    skip_s[threadIdx.x] = skip;
    if (skip && split == 0) atomicAdd(a.skipped, 1ULL);
  }
  for (int t = threadIdx.x; t < G * d; t += blockDim.x) q_s[t / d][t % d] = q[(row * H + head0 + t / d) * d + t % d];
  __syncthreads();

  // This chunk of the virtual key range, in 32-key tiles.
  int64_t total = 0;
  for (int n = 0; n < count; ++n) total += spans[n].end > spans[n].begin ? spans[n].end - spans[n].begin : 0;
  const int64_t chunk = ((total + splits - 1) / splits + 31) / 32 * 32;
  const int64_t v0 = split * chunk, v1 = min(total, v0 + chunk);

  float run_max[kGroupTile], sum_p[kGroupTile], sum_d[kGroupTile], acc[kGroupTile][kLaneElems];
#pragma unroll
  for (int g = 0; g < kGroupTile; ++g) {
    run_max[g] = -INFINITY, sum_p[g] = 0.0f, sum_d[g] = 0.0f;
#pragma unroll
    for (int c = 0; c < kLaneElems; ++c) acc[g][c] = 0.0f;
  }
  int64_t span_start = 0;  // virtual index of spans[n].begin
  for (int n = 0; n < count; ++n) {
    const Span& sp = spans[n];
    const int64_t len = sp.end > sp.begin ? sp.end - sp.begin : 0;
    const int64_t lo = max(v0, span_start), hi = min(v1, span_start + len);
    span_start += len;
    if (lo >= hi) continue;
    for (int64_t t0 = lo + 32 * warp; t0 < hi; t0 += 32 * kWarps) {
      const int64_t j = sp.begin + (t0 - (span_start - len)) + lane;  // this lane's key
      const bool valid = t0 + lane < hi;
      // The tile's key and value rows into this warp's shared rows: lane j copies row j (16-byte
      // loads issued together, where reading them key by key would wait on each in turn).
      const uint8_t* ke = valid ? entry_at(s, sp.keys, j) : nullptr;
      const uint8_t* ve = valid ? entry_at(s, sp.values, j) : nullptr;
      uint8_t* k_row = k_tile + (static_cast<size_t>(warp) * 32 + lane) * v_stride;
      if (ke != nullptr) copy_row(k_row, ke, static_cast<int>(s.entry_bytes));
      if (ve != nullptr) copy_row(v_tile + (static_cast<size_t>(warp) * 32 + lane) * v_stride, ve, static_cast<int>(s.entry_bytes));
      float score[kGroupTile];
#pragma unroll
      for (int g = 0; g < kGroupTile; ++g) score[g] = 0.0f;
      if (ke != nullptr) {
#pragma unroll 4
        for (int c = 0; c < d / 8; ++c) {
          float k8[8];
          load8<T>(k_row, c, k8);
#pragma unroll
          for (int g = 0; g < kGroupTile; ++g) {
            if (g >= G) break;
            const float* qg = &q_s[g][8 * c];
#pragma unroll
            for (int e = 0; e < 8; ++e) score[g] += qg[e] * k8[e];
          }
        }
      }
#pragma unroll
      for (int g = 0; g < kGroupTile; ++g) {
        if (g >= G) break;
        const bool masked = !valid || (sp.distant && skip_s[g]);
        const float x = masked ? -INFINITY : score[g] * a.scale;
        const float tile_max = warp_max(x);
        const float m = fmaxf(run_max[g], tile_max);
        const float p = m == -INFINITY ? 0.0f : expf(x - m);
        const float correction = run_max[g] == -INFINITY ? 0.0f : expf(run_max[g] - m);
        const float tile_sum = warp_sum(p);
        sum_p[g] *= correction, sum_d[g] *= correction;
        if (sp.distant) sum_d[g] += tile_sum;
        else sum_p[g] += tile_sum;
#pragma unroll
        for (int c = 0; c < kLaneElems; ++c) acc[g][c] *= correction;
        run_max[g] = m;
        p_s[warp][g][lane] = p;
      }
      __syncwarp();
      const int64_t tile_end = hi - t0 < 32 ? hi - t0 : 32;
      for (int jj = 0; jj < tile_end; ++jj) {
        float v[kLaneElems];
        load_lane<T>(v_tile + (static_cast<size_t>(warp) * 32 + jj) * v_stride, lane, d, v);
#pragma unroll
        for (int g = 0; g < kGroupTile; ++g) {
          if (g >= G) break;
          const float p = p_s[warp][g][jj];
#pragma unroll
          for (int c = 0; c < kLaneElems; ++c) acc[g][c] += p * v[c];
        }
      }
      __syncwarp();
    }
  }

  // Merge the warps: per head, max and sums in shared memory, then acc.
  __shared__ float w_max[kWarps][kGroupTile], w_sp[kWarps][kGroupTile], w_sd[kWarps][kGroupTile];
  __shared__ float w_acc[kWarps][kMaxHeadDim];
  if (lane == 0) {
    for (int g = 0; g < G; ++g) w_max[warp][g] = run_max[g], w_sp[warp][g] = sum_p[g], w_sd[warp][g] = sum_d[g];
  }
  for (int g = 0; g < G; ++g) {
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kLaneElems; ++c) {
      const int i = lane_element(lane, c, d);
      if (i < d && (d % 32 != 0 || c < d / 32)) w_acc[warp][i] = acc[g][c];
    }
    __syncthreads();
    float m = -INFINITY;
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, w_max[w][g]);
    float* out = partial_at(partials, slot, H, head0 + g, splits, split, d);
    for (int t = threadIdx.x; t < d + 3; t += blockDim.x) {
      float x = 0.0f;
      for (int w = 0; w < kWarps; ++w) {
        const float weight = w_max[w][g] == -INFINITY ? 0.0f : expf(w_max[w][g] - m);
        if (weight == 0.0f) continue;
        x += weight * (t == 1 ? w_sp[w][g] : t == 2 ? w_sd[w][g] : t >= 3 ? w_acc[w][t - 3] : 0.0f);
      }
      out[t] = t == 0 ? m : x;
    }
  }
}

// The tensor-core decode kernel (bf16 entries, no selection stores, head_dim a multiple of 32): each
// warp is one chunk of the virtual key range ("split") of (row, KV head, tile of up to 16 query
// heads), the heads the mma's 16 rows; blocks are any kWarps consecutive warps. Tiles of 16 keys,
// with Q and P split into bf16 hi + lo (the float32 kernel's accuracy). The partial results are
// merge_kernel's.
//  - S = 0: a tile's keys and values go from the pool straight into registers and the warp waits
//    for them before its arithmetic (a tile is 8 KB in flight per warp at head_dim 128);
//  - S >= 2: each lane copies the 16-byte chunks it will read itself into an S-stage ring in
//    shared memory (cp.async; no barrier, not even __syncwarp: a lane reads only its own copies), S - 1
//    tiles ahead of its arithmetic, so that the next tiles' loads are in flight while this one is
//    computed. Slot (chunk i, lane) is at (i * 32 + lane) * 16 bytes: a warp's 16-byte accesses of
//    one chunk are consecutive (no bank conflicts).
constexpr int kMmaHeads = 16;

// The tiles of a warp's chunk [v0, v1) of the virtual key range, in order: tile [t0, min(t0 + 16, hi))
// of span n (virtual indices; position = virtual index + offset). Done when n == count. 32-bit
// (positions and slots fit, as in paged.cuh), and the current span's streams and class are kept
// here: the spans array lives in local memory (indexed by n), read only when a span is entered.
struct TileCursor {
  int n = 0;
  int32_t span_start = 0, t0 = 0, hi = 0, offset = 0;
  DeviceStream keys, values;
  bool distant = false;

  // From span n on, the first span that meets [v0, v1).
  __device__ __forceinline__ void enter(const Span (&spans)[kMaxSpans], int count, int32_t v0, int32_t v1) {
    for (; n < count; ++n) {
      const Span& sp = spans[n];
      const int32_t begin = static_cast<int32_t>(sp.begin), end = static_cast<int32_t>(sp.end);
      const int32_t len = end > begin ? end - begin : 0;
      const int32_t lo = max(v0, span_start);
      hi = min(v1, span_start + len);
      if (lo < hi) {
        t0 = lo, offset = begin - span_start;
        keys = sp.keys, values = sp.values, distant = sp.distant;
        return;
      }
      span_start += len;
    }
  }
  __device__ __forceinline__ void advance(const Span (&spans)[kMaxSpans], int count, int32_t v0, int32_t v1) {
    t0 += 16;
    if (t0 < hi) return;
    const Span& sp = spans[n];
    span_start += static_cast<int32_t>(sp.end - sp.begin);
    ++n;
    enter(spans, count, v0, v1);
  }
};

struct TilePosition {
  int32_t p0 = 0;
  uint32_t logical = 0, slot = 0;
};

// The entries of a 16-key tile in one stream: positions (or slots) p0 + d, d < 16. With pages of 16
// or more tokens the tile lies in at most two consecutive pages, so the page table is read twice
// per tile and stream by the whole warp (one address: a broadcast), and a lane's entry is a select
// and a multiply-add; with smaller pages (kSmallPages) each lane looks its entries up (a 32-bit
// division each).
template <bool kSmallPages>
struct TileEntries {
  const uint8_t* first = nullptr;   // slot 0 of p0's page (null: no page)
  const uint8_t* second = nullptr;  // slot 0 of the next page
  uint32_t slot0 = 0;               // p0's slot in its page
  int32_t p0 = 0;
  DeviceStream stream;

  __device__ __forceinline__ static const uint8_t* page_base(const DeviceStep& s, const DeviceStream& st, uint32_t i) {
    if (i >= st.num_pages) return nullptr;
    const int32_t page = st.pages[i];
    return page < 0 ? nullptr : s.pool + static_cast<int64_t>(page) * s.page_bytes;
  }
  __device__ __forceinline__ TileEntries(const DeviceStep& s, const DeviceStream& st, const TilePosition& t)
      : slot0(t.slot), p0(t.p0), stream(st) {
    if constexpr (!kSmallPages) first = page_base(s, st, t.logical), second = page_base(s, st, t.logical + 1);
  }
  // Entry p0 + d (d < keys): `ok` whether it exists (within the tile, on a page), and its address,
  // or where it does not, an address in the pool's first page that a zero-byte copy may name (no
  // select per copy). The offset in the page is a 32-bit product (pages are under 2 GiB).
  __device__ __forceinline__ const uint8_t* at(const DeviceStep& s, int d, int keys, bool& ok) const {
    if constexpr (kSmallPages) {
      const uint8_t* e = d < keys ? entry_at(s, stream, p0 + d) : nullptr;
      ok = e != nullptr;
      return ok ? e : s.pool;
    } else {
      const uint32_t slot = slot0 + static_cast<uint32_t>(d), per_page = static_cast<uint32_t>(s.page_tokens);
      const bool next = slot >= per_page;
      const uint8_t* base = next ? second : first;
      const uint32_t in_page = next ? slot - per_page : slot;
      ok = d < keys && base != nullptr;
      return (ok ? base : s.pool) + in_page * static_cast<uint32_t>(s.entry_bytes);
    }
  }
};

// The cursor's tile start: position p0, its page (logical index) and slot (one 32-bit division,
// for the key and the value stream both; none with small pages, looked up per lane).
template <bool kSmallPages>
__device__ __forceinline__ TilePosition tile_position(const DeviceStep& s, const TileCursor& cur) {
  TilePosition t;
  t.p0 = cur.t0 + cur.offset;
  if constexpr (!kSmallPages) {
    const uint32_t per_page = static_cast<uint32_t>(s.page_tokens);
    t.logical = static_cast<uint32_t>(t.p0) / per_page;
    t.slot = static_cast<uint32_t>(t.p0) - t.logical * per_page;
  }
  return t;
}

template <int D>
struct DecodeSlots {
  using W = WarpAttention<D, true>;
  static constexpr int kKeySlots = 2 * W::kKeyChunks;     // keys g, g + 8: chunks 4 j + c
  static constexpr int kSlots = kKeySlots + 4 * W::kValueHalves;  // + values 2c, 2c+1, 2c+8, 2c+9
  static constexpr int kStageBytes = kSlots * 32 * 16;   // one warp's tile
};

// decode_mma_kernel's tiles by bulk copies (sm_90; kBulk, pages of 16 or more tokens, bf16 entries):
// lane l brings row l % 16 of the tile's keys (l < 16) or values (l >= 16) into the warp's stage with
// one cp.async.bulk of the entry (a tile's keys lie in at most two pages, whose table entries the
// warp reads once), counted on the stage's mbarrier: one copy instruction per lane and tile instead
// of 16 cp.async and their per-lane lookups. A row that gets no copy (past the tile's keys, or
// without a page) is zeroed by its lane, as the per-lane copies zero-fill it. Rows are padded so that
// the fragment reads meet no bank conflicts: key rows kKeyStride apart (64 mod 128 bytes: lanes
// (g, c) and (g + 1, c) of a quarter-warp read rows g and g + 1), value rows kValueStride apart (16
// mod 64: rows 2c of a quarter-warp land 32 bytes apart). The copies go S - 1 tiles ahead of the
// products, as in the cp.async ring, issued at the top of an iteration from page-table reads made
// one iteration earlier (`prepare`, then `launch`), so that the reads' latency is spent computing
// (session 22: looked up right before its copies, one lookup per tile was slower than per-lane
// lookups in parallel).
template <int D>
struct BulkStage {
  static constexpr int kRowBytes = 2 * D;  // a bf16 entry
  static constexpr int kKeyStride = kRowBytes + (64 - kRowBytes % 128 + 128) % 128;
  static constexpr int kValueStride = kRowBytes + (16 - kRowBytes % 64 + 64) % 64;
  static constexpr int kBytes = 16 * (kKeyStride + kValueStride);  // one warp's stage
  static_assert(kKeyStride % 128 == 64 && kValueStride % 64 == 16, "conflict-free row strides");
};

template <int D, int S, typename W, typename Compute>
__device__ __forceinline__ void bulk_tiles(const DeviceStep& s, const Span (&spans)[kMaxSpans], int count, int32_t v0,
                                           int32_t v1, W& w, int warp, int lane, Compute& compute) {
  using Stage = BulkStage<D>;
  constexpr int kRowBytes = Stage::kRowBytes, kKeyStride = Stage::kKeyStride, kValueStride = Stage::kValueStride;
  extern __shared__ __align__(16) uint8_t decode_ring[];  // [kWarps][S][16 key rows, 16 value rows]
  __shared__ uint64_t full[kWarps][S];
  uint8_t* ring = decode_ring + static_cast<size_t>(warp) * S * Stage::kBytes;
  auto key_rows = [&](int stage) { return ring + stage * Stage::kBytes; };
  auto value_rows = [&](int stage) { return ring + stage * Stage::kBytes + 16 * kKeyStride; };
  if (lane == 0) {
    for (int st = 0; st < S; ++st) sm90a::mbarrier_init(&full[warp][st], 1);
    sm90a::mbarrier_init_fence();
  }
  __syncwarp();
  int32_t keys[S];
  bool tile_distant[S];
  uint32_t phases = 0;  // bit st: the parity of stage st's next phase
  TileCursor ahead;
  ahead.enter(spans, count, v0, v1);
  // The tile `prepare` looked up for the next `launch`: rows [0, n1) in the first pages (from `slot`
  // on), [n1, n) in the next ones (null: no page); n = 0: none (past the last tile).
  const uint8_t *key_first = nullptr, *key_second = nullptr, *value_first = nullptr, *value_second = nullptr;
  uint32_t slot = 0;
  int n = 0, n1 = 0;
  bool distant = false;
  auto prepare = [&] {
    n = 0;
    if (ahead.n >= count) return;
    const TilePosition at = tile_position<false>(s, ahead);
    const TileEntries<false> ke(s, ahead.keys, at), ve(s, ahead.values, at);
    key_first = ke.first, key_second = ke.second, value_first = ve.first, value_second = ve.second;
    slot = at.slot;
    n = min(16, ahead.hi - ahead.t0);
    n1 = min(n, static_cast<int>(s.page_tokens - at.slot));
    distant = ahead.distant;
    ahead.advance(spans, count, v0, v1);
  };
  // This lane's row of the tile into `stage`: a copy, or zeros.
  const int r = lane % 16;
  const bool key_lane = lane < 16;
  auto launch = [&](int stage) {
    keys[stage] = n, tile_distant[stage] = distant;
    if (n == 0) return;
    const uint8_t* page = r < n1 ? (key_lane ? key_first : value_first) : (key_lane ? key_second : value_second);
    const bool present = r < n && page != nullptr;
    uint8_t* row = key_lane ? key_rows(stage) + r * kKeyStride : value_rows(stage) + r * kValueStride;
    uint64_t* bar = &full[warp][stage];
    const uint32_t rows = __popc(__ballot_sync(0xffffffffu, present));
    if (lane == 0) sm90a::mbarrier_arrive_expect_tx(bar, rows * kRowBytes);
    __syncwarp();  // every lane has read the stage's previous tile; the expected bytes are set
    if (present) {
      sm90a::fence_proxy_async();  // the stage's reads, and this lane's zero stores, before the copy's writes
      const uint32_t at = r < n1 ? slot + r : r - n1;
      sm90a::bulk_copy_to_shared(row, page + at * kRowBytes, kRowBytes, bar);
    } else {
#pragma unroll
      for (int i = 0; i < kRowBytes / 16; ++i) reinterpret_cast<uint4*>(row)[i] = make_uint4(0, 0, 0, 0);
    }
  };
  // Tile j goes to stage j % S. Its copies are launched S - 1 tiles ahead of its products, at the top
  // of an iteration, from lookups made one iteration before (during the products in between).
  prepare();
#pragma unroll
  for (int st = 0; st + 1 < S; ++st) launch(st), prepare();
  for (bool more = true; more;) {
#pragma unroll
    for (int st = 0; st < S; ++st) {
      launch((st + S - 1) % S);  // the stage computed last
      prepare();
      if (keys[st] == 0) {  // past the last tile (and so is every later one: no copy in flight)
        more = false;
        break;
      }
      sm90a::mbarrier_wait(&full[warp][st], (phases >> st) & 1u);
      phases ^= 1u << st;
      __syncwarp();  // the rows other lanes zeroed
      uint4 k[2][W::kKeyChunks];
      uint4 v[4][W::kValueHalves];
#pragma unroll
      for (int nb = 0; nb < 2; ++nb)
#pragma unroll
        for (int j = 0; j < W::kKeyChunks; ++j)
          k[nb][j] = *reinterpret_cast<const uint4*>(key_rows(st) + (w.g + 8 * nb) * kKeyStride + 16 * (4 * j + w.c));
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int hv = 0; hv < W::kValueHalves; ++hv) {
          const int chunk = w.g + 8 * hv, row_i = 2 * w.c + i % 2 + 8 * (i / 2);
          v[i][hv] = 8 * chunk < D ? *reinterpret_cast<const uint4*>(value_rows(st) + row_i * kValueStride + 16 * chunk)
                                   : make_uint4(0, 0, 0, 0);
        }
      compute(k, v, keys[st], tile_distant[st]);
    }
  }
}

// Bulk copies and mbarriers exist from sm_90 on: code compiled for an earlier target (a build for
// sm_80 that the driver compiles for a Hopper GPU from its PTX) takes the cp.async ring instead.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
constexpr bool kDeviceHasBulkCopies = false;
#else
constexpr bool kDeviceHasBulkCopies = true;
#endif

template <int D, int S, bool kSmallPages, bool kBulk = false>
__global__ void __launch_bounds__(kWarps * 32)
    decode_mma_kernel(DeviceStep s, AttentionLaunch a, const float* q, int splits, float* partials) {
  using W = WarpAttention<D, true>;
  using Slots = DecodeSlots<D>;
  const int H = a.num_heads, Hkv = s.num_kv_heads, groups = H / Hkv, layer = a.layer;
  const int tiles_per_head = (groups + kMmaHeads - 1) / kMmaHeads;
  // Warp w of the grid: split w % splits of unit w / splits, a unit being (row, KV head, tile of
  // heads). Blocks hold any kWarps consecutive warps, so none idles when splits is not a multiple
  // of kWarps (2 splits at batch 64 left half of each block idle and needed two waves).
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // 32-bit: the host keeps the grid's warps under 2^31 (a 64-bit division is a long software
  // sequence, and this kernel is one warp's instruction chain long at batch 1).
  const uint32_t global_warp = blockIdx.x * kWarps + warp;
  const uint32_t units_per_row = static_cast<uint32_t>(Hkv * tiles_per_head);
  pdl_launch_dependents();  // the merge's blocks may start; they wait for this kernel to finish
  if (global_warp >= static_cast<uint32_t>(s.num_decode_rows) * units_per_row * splits) {
    pdl_wait();
    return;
  }
  const uint32_t unit = global_warp / static_cast<uint32_t>(splits), slot = unit / units_per_row;
  const int split = static_cast<int>(global_warp - unit * splits);
  const int tile = static_cast<int>(unit - slot * units_per_row);
  const int64_t row = s.decode_rows != nullptr ? s.decode_rows[slot] : slot;
  const int h = tile / tiles_per_head;
  const int head0 = h * groups + (tile % tiles_per_head) * kMmaHeads;
  const int G = min(kMmaHeads, h * groups + groups - head0);
  const int b = s.row_entry[row];
  const int64_t pos = s.first_pos[b] + (row - s.row_begin[b]);

  const KvRule kr = s.key_rules[layer * Hkv + h];
  Span spans[kMaxSpans];
  bool distant = false;
  const int count = row_spans(s, layer, b, h, pos, spans, distant);
  const bool shared = kr.retention == kRetainWindow || kr.retention == kRetainNone;

  // Up to here only the step's metadata (pdl.cuh): q, this step's KV entries and the gates come from
  // the kernels before.
  pdl_wait();
  W w;
  w.init(lane);
  // Rows g and g + 8: their heads, whether they exist, and whether their anchor's gate reached tau.
  bool skip[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int t = w.g + 8 * r, i = head0 + t;
    skip[r] = t < G && distant && shared && kr.distant_source >= 0 && a.tau < 1.0f && a.all_gates != nullptr &&
              a.all_gates[(kr.distant_source * s.rows + row) * H + i] >= a.tau;
    if (skip[r] && split == 0 && w.c == 0) atomicAdd(a.skipped, 1ULL);
  }
  const float* qrow = q + (row * H + head0) * D;
  w.load_q(w.g < G ? qrow + w.g * D : nullptr, w.g + 8 < G ? qrow + (w.g + 8) * D : nullptr,
           a.scale * 1.4426950408889634f);

  int32_t total = 0;
  for (int n = 0; n < count; ++n)
    total += spans[n].end > spans[n].begin ? static_cast<int32_t>(spans[n].end - spans[n].begin) : 0;
  const int32_t chunk = static_cast<int32_t>((static_cast<uint32_t>(total) + splits - 1) / splits + 15) / 16 * 16;
  const int32_t v0 = split * chunk, v1 = min(total, v0 + chunk);

  // One tile: S from its keys (k), masked past `keys` and where a distant head skips, the online
  // softmax, O += P V (v).
  auto compute = [&](const uint4 (&k)[2][W::kKeyChunks], const uint4 (&v)[4][W::kValueHalves], int32_t keys,
                     bool tile_distant) {
    float x[2][4];
#pragma unroll
    for (int nb = 0; nb < 2; ++nb) {
      w.scores(k[nb], x[nb]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool valid = 8 * nb + 2 * w.c + e % 2 < keys && !(tile_distant && skip[e / 2]);
        if (!valid) x[nb][e] = -INFINITY;
      }
    }
    w.softmax(x, tile_distant ? 0xffu : 0u);
    w.accumulate(x, v);
  };

  if constexpr (S == 0) {
    // Tiles loaded whole before they are used: a software-pipelined version in registers (the next
    // tile's loads issued during this one's arithmetic) measured slower at batch 32 on the H200
    // (255 registers and the spans' bounds in local memory).
    TileCursor cur;
    for (cur.enter(spans, count, v0, v1); cur.n < count; cur.advance(spans, count, v0, v1)) {
      const TilePosition at = tile_position<kSmallPages>(s, cur);
      const TileEntries<kSmallPages> ke(s, cur.keys, at), ve(s, cur.values, at);
      const int32_t keys = cur.hi - cur.t0;
      // Keys g and g + 8 of the tile for Q Kᵀ; values 2c, 2c + 1, 2c + 8, 2c + 9 for P V.
      uint4 k[2][W::kKeyChunks];
      uint4 v[4][W::kValueHalves];
#pragma unroll
      for (int nb = 0; nb < 2; ++nb) {
        bool ok;
        const uint8_t* e = ke.at(s, w.g + 8 * nb, keys, ok);
        w.load_key(ok ? e : nullptr, k[nb]);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        bool ok;
        const uint8_t* e = ve.at(s, 2 * w.c + i % 2 + 8 * (i / 2), keys, ok);
        w.load_value(ok ? e : nullptr, v[i]);
      }
      compute(k, v, keys, cur.distant);
    }
  } else if constexpr (kBulk && kDeviceHasBulkCopies) {
    bulk_tiles<D, S>(s, spans, count, v0, v1, w, warp, lane, compute);
  } else {
    extern __shared__ __align__(16) uint8_t decode_ring[];  // [kWarps][S][kSlots][32 lanes][16 bytes]
    uint8_t* ring = decode_ring + static_cast<size_t>(warp) * S * Slots::kStageBytes + lane * 16;
    auto slot_at = [&](int stage, int i) { return ring + (stage * Slots::kSlots + i) * 32 * 16; };
    // Stage `stage` takes the cursor's tile (zeros where a key has no entry or lies past the tile);
    // an empty group past the last tile, so that the waits below count tiles.
    int32_t keys[S];
    bool tile_distant[S];
    TileCursor ahead;
    ahead.enter(spans, count, v0, v1);
    auto issue = [&](int stage) {
      keys[stage] = 0, tile_distant[stage] = false;
      if (ahead.n < count) {
        const TilePosition at = tile_position<kSmallPages>(s, ahead);
        const TileEntries<kSmallPages> ke(s, ahead.keys, at), ve(s, ahead.values, at);
        keys[stage] = min(16, ahead.hi - ahead.t0), tile_distant[stage] = ahead.distant;
#pragma unroll
        for (int nb = 0; nb < 2; ++nb) {
          bool ok;
          const uint8_t* e = ke.at(s, w.g + 8 * nb, keys[stage], ok);
#pragma unroll
          for (int j = 0; j < W::kKeyChunks; ++j)
            prefill::cp_async16(slot_at(stage, nb * W::kKeyChunks + j), e + 16 * (4 * j + w.c), ok);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          bool ok;
          const uint8_t* e = ve.at(s, 2 * w.c + i % 2 + 8 * (i / 2), keys[stage], ok);
#pragma unroll
          for (int hv = 0; hv < W::kValueHalves; ++hv) {
            const int chunk = w.g + 8 * hv;  // past the row's end (head_dim 96): zeros, from within the row
            prefill::cp_async16(slot_at(stage, Slots::kKeySlots + i * W::kValueHalves + hv),
                                e + 16 * (8 * chunk < D ? chunk : 0), ok && 8 * chunk < D);
          }
        }
        ahead.advance(spans, count, v0, v1);
      }
      prefill::cp_async_commit();
    };
#pragma unroll
    for (int st = 0; st + 1 < S; ++st) issue(st);
    for (bool more = true; more;) {
#pragma unroll
      for (int st = 0; st < S; ++st) {
        issue((st + S - 1) % S);  // the stage computed last, S - 1 tiles ahead of this one
        prefill::cp_async_wait<S - 1>();
        if (keys[st] == 0) {
          more = false;
          break;
        }
        uint4 k[2][W::kKeyChunks];
        uint4 v[4][W::kValueHalves];
#pragma unroll
        for (int nb = 0; nb < 2; ++nb)
#pragma unroll
          for (int j = 0; j < W::kKeyChunks; ++j)
            k[nb][j] = *reinterpret_cast<const uint4*>(slot_at(st, nb * W::kKeyChunks + j));
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int hv = 0; hv < W::kValueHalves; ++hv)
            v[i][hv] = *reinterpret_cast<const uint4*>(slot_at(st, Slots::kKeySlots + i * W::kValueHalves + hv));
        compute(k, v, keys[st], tile_distant[st]);
      }
    }
    prefill::cp_async_wait<0>();  // the empty groups past the last tile
  }
  w.reduce_sums();
  // This split's partial of each head: (max, proximal sum, distant sum, unnormalised output).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int t = w.g + 8 * r;
    if (t >= G) continue;
    float* out = partial_at(partials, slot, H, head0 + t, splits, split, D);
    if (w.c == 0) {
      out[0] = w.m[r] == -INFINITY ? -INFINITY : w.m[r] * 0.6931471805599453f;  // natural-log units
      out[1] = w.sum_p[r], out[2] = w.sum_d[r];
    }
#pragma unroll
    for (int nb = 0; nb < W::kOutBlocks; ++nb)
#pragma unroll
      for (int e = 2 * r; e < 2 * r + 2; ++e) {
        const int d = w.out_element(nb, e);
        if (d < D) out[3 + d] = w.o[nb][e];
      }
  }
}

// One block per (row, query head): the chunks' partials combined. Each chunk's weight
// exp(max_c - max) goes to shared memory first; then kThreads / 128 groups of threads each sum
// their share of the chunks for every output element: with 512 threads (many chunks: batch 1,
// 64 chunks at 4K keys) a thread waits on a quarter of the chunks' loads.
// kPrefetch > 0 (splits <= kPrefetch x the groups): a thread loads its chunks' output elements
// before the statistics' reductions, so that the block waits on global memory once, not twice
// (at batch 1 the merge is a few dependent round trips to L2 long, not bandwidth-bound).
constexpr int kMaxMergeSplits = 1024;

template <int kThreads, int kPrefetch>
__global__ void __launch_bounds__(kThreads)
    merge_kernel(int num_heads, int d, int layer, int64_t rows, int splits, const float* partials, float* out,
                 float* all_gates, const int32_t* decode_rows) {
  const int64_t slot = blockIdx.x, row = decode_rows != nullptr ? decode_rows[slot] : slot;
  const int i = blockIdx.y;
  pdl_wait();  // the partials of the kernel before (pdl.cuh)
  __shared__ float weight[kMaxMergeSplits];
  constexpr int kGroups = kThreads / kMaxHeadDim;
  constexpr int kPerThread = kMaxMergeSplits / kThreads;
  __shared__ float reduce[3][kThreads / 32];
  __shared__ float sums[kGroups][kMaxHeadDim];
  const float* base = partial_at(const_cast<float*>(partials), slot, num_heads, i, splits, 0, d);
  const int64_t stride = d + 3;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = kThreads / 32;
  // Group g sums chunks g, g + kGroups, ... for element t.
  const int g = threadIdx.x / kMaxHeadDim, t = threadIdx.x % kMaxHeadDim;
  float early[kPrefetch > 0 ? kPrefetch : 1];
#pragma unroll
  for (int k = 0; k < kPrefetch; ++k) {
    const int c = g + k * kGroups;
    early[k] = c < splits && t < d ? base[c * stride + 3 + t] : 0.0f;
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
      for (int c = g; c < splits; c += kGroups) x += weight[c] * base[c * stride + 3 + t];
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

// The stages of decode_mma_kernel's shared-memory ring: PODKV_CUDA_DECODE_STAGES = 0 (loads into
// registers) or 2..4; 3 by default.
int decode_stages() {
  static const int stages = [] {
    const char* e = std::getenv("PODKV_CUDA_DECODE_STAGES");
    const long v = e != nullptr ? std::strtol(e, nullptr, 10) : 3;
    return v == 0 || (v >= 2 && v <= 4) ? static_cast<int>(v) : 3;
  }();
  return stages;
}

// f(kernel, dynamic shared bytes) with the decode_mma_kernel of head_dim (32, 64, 96 or 128), the
// configured stages, pages of fewer than 16 tokens or not, and bulk copies or not (ring stages
// only), its shared-memory limit raised to what it takes.
template <int D, bool kSmallPages, bool kBulk, typename F>
void with_decode_mma_stages(F&& f) {
  auto run = [&](auto kernel, int stages) {
    // The larger of the two layouts where bulk copies are asked for: code compiled for a target
    // before sm_90 takes the ring (DecodeSlots) in the same kernel.
    const size_t stage_bytes = kBulk && stages > 0 ? std::max<size_t>(BulkStage<D>::kBytes, DecodeSlots<D>::kStageBytes)
                                                   : DecodeSlots<D>::kStageBytes;
    const size_t smem = static_cast<size_t>(kWarps) * stages * stage_bytes;
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "cudaFuncSetAttribute(decode_mma_kernel)");
    f(kernel, smem);
  };
  switch (decode_stages()) {
    case 0: run(decode_mma_kernel<D, 0, kSmallPages, false>, 0); break;
    case 2: run(decode_mma_kernel<D, 2, kSmallPages, kBulk>, 2); break;
    case 4: run(decode_mma_kernel<D, 4, kSmallPages, kBulk>, 4); break;
    default: run(decode_mma_kernel<D, 3, kSmallPages, kBulk>, 3); break;
  }
}

template <bool kSmallPages, bool kBulk, typename F>
void with_decode_mma_pages(int head_dim, F&& f) {
  if (head_dim <= 32) with_decode_mma_stages<32, kSmallPages, kBulk>(f);
  else if (head_dim <= 64) with_decode_mma_stages<64, kSmallPages, kBulk>(f);
  else if (head_dim <= 96) with_decode_mma_stages<96, kSmallPages, kBulk>(f);
  else with_decode_mma_stages<128, kSmallPages, kBulk>(f);
}

// PODKV_CUDA_MERGE_PREFETCH=0: the merge loads its chunks' outputs after the statistics (to compare).
bool merge_prefetch() {
  static const bool on = [] {
    const char* e = std::getenv("PODKV_CUDA_MERGE_PREFETCH");
    return e == nullptr || std::string(e) != "0";
  }();
  return on;
}

// How decode_mma_kernel brings a tile in, PODKV_CUDA_DECODE_COPY: "bulk" (the default on compute
// capability 9.0 and later where a block may have the shared memory the largest head_dim's stages
// take: one bulk copy of an entry per lane and tile, bulk_tiles), "tile" (16-byte cp.async per lane,
// the tile's pages looked up once) or "lane" (each lane looks its own entries up, as with pages under
// 16 tokens). Pages under 16 tokens always take "lane".
enum class DecodeCopy { kBulk, kTile, kLane };
DecodeCopy decode_copy() {
  static const DecodeCopy copy = [] {
    const char* e = std::getenv("PODKV_CUDA_DECODE_COPY");
    const std::string name = e != nullptr ? e : "";
    if (name == "lane") return DecodeCopy::kLane;
    if (name == "tile") return DecodeCopy::kTile;
    int device = 0, major = 0, smem = 0;
    const bool known = cudaGetDevice(&device) == cudaSuccess &&
                       cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                       cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) == cudaSuccess;
    const size_t need = static_cast<size_t>(kWarps) * std::max(decode_stages(), 1) * BulkStage<128>::kBytes + 1024;
    return known && major >= 9 && static_cast<size_t>(smem) >= need ? DecodeCopy::kBulk : DecodeCopy::kTile;
  }();
  return copy;
}

// bulk_ok: the pages and entries allow bulk copies (16-byte multiples; entries of 2 x head_dim bytes,
// the rows bulk_tiles reads).
template <typename F>
void with_decode_mma_kernel(int head_dim, int64_t page_tokens, bool bulk_ok, F&& f) {
  const DecodeCopy copy = decode_copy();
  if (page_tokens < 16 || copy == DecodeCopy::kLane) with_decode_mma_pages<true, false>(head_dim, f);
  else if (copy == DecodeCopy::kBulk && bulk_ok) with_decode_mma_pages<false, true>(head_dim, f);
  else with_decode_mma_pages<false, false>(head_dim, f);
}

}  // namespace

namespace {
void launch_simt(const DeviceStep& step, const AttentionLaunch& launch, const float* q, int splits, float* partials,
                 cudaStream_t stream);
}  // namespace

bool decode_attention_fits(int head_dim) { return head_dim % 8 == 0 && head_dim <= kMaxHeadDim; }

size_t decode_attention_partial_floats(int64_t rows, int num_heads, int splits, int head_dim) {
  return static_cast<size_t>(rows) * num_heads * splits * (head_dim + 3);
}

void decode_attention(const DeviceStep& step, const AttentionLaunch& launch, const float* q, int splits,
                      float* partials, cudaStream_t stream) {
  if (step.num_decode_rows == 0) return;
  check(decode_attention_fits(step.head_dim),
        "cuda decode attention: head_dim " + std::to_string(step.head_dim) + " is not a multiple of 8 up to 128");
  check(splits >= 1 && splits <= kMaxMergeSplits, "cuda decode attention: 1 to 1024 splits");
  const int groups = launch.num_heads / step.num_kv_heads;
  if (decode_attention_mma_fits(step.head_dim, step.dtype, step.num_groups)) {
    const int tiles = (groups + kMmaHeads - 1) / kMmaHeads;
    const int64_t warps = step.num_decode_rows * step.num_kv_heads * tiles * splits;
    check(warps < (int64_t{1} << 31), "cuda decode attention: " + std::to_string(warps) +
                                          " warps (rows x KV heads x splits) exceed the kernel's 32-bit indices");
    const dim3 grid(static_cast<unsigned>((warps + kWarps - 1) / kWarps));
    const bool bulk_ok = reinterpret_cast<uintptr_t>(step.pool) % 16 == 0 && step.page_bytes % 16 == 0 &&
                         step.entry_bytes == 2 * int64_t{step.head_dim};
    with_decode_mma_kernel(step.head_dim, step.page_tokens, bulk_ok, [&](auto kernel, size_t smem) {
      launch_pdl(kernel, grid, dim3(kWarps * 32), smem, stream, "decode_mma_kernel", step, launch, q, splits, partials);
    });
  } else {
    launch_simt(step, launch, q, splits, partials, stream);
  }
  const dim3 merge_grid(static_cast<unsigned>(step.num_decode_rows), static_cast<unsigned>(launch.num_heads));
  // A programmatic dependent of the attention kernel (pdl.cuh): its blocks wait at their start.
  auto merge = [&](auto kernel, int threads) {
    launch_pdl(kernel, merge_grid, dim3(threads), 0, stream, "merge_kernel", launch.num_heads, step.head_dim,
               launch.layer, step.rows, splits, partials, launch.out, launch.all_gates, step.decode_rows);
  };
  // With the prefetch: up to 128 chunks over 4 groups (32 each), up to 16 over one.
  const bool prefetch = merge_prefetch();
  if (splits >= 16 && prefetch && splits <= 128) merge(merge_kernel<512, 32>, 512);
  else if (splits >= 16) merge(merge_kernel<512, 0>, 512);
  else if (prefetch) merge(merge_kernel<128, 16>, 128);
  else merge(merge_kernel<128, 0>, 128);
}

int decode_attention_mma_warps_per_sm(int head_dim) {
  int blocks = 0;
  // The kernel of pages of 64 tokens (the common ones; the others' registers differ by a few at most).
  with_decode_mma_kernel(head_dim, 64, true, [&](auto kernel, size_t smem) {
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kWarps * 32, smem),
               "cudaOccupancyMaxActiveBlocksPerMultiprocessor(decode_mma_kernel)");
  });
  return std::max(1, blocks) * kWarps;
}

bool decode_attention_mma_fits(int head_dim, int32_t kv_dtype, int num_groups) {
  return static_cast<KvDType>(kv_dtype) == KvDType::BF16 && head_dim % 32 == 0 && head_dim <= kMaxHeadDim &&
         num_groups == 0;
}

namespace {

void launch_simt(const DeviceStep& step, const AttentionLaunch& launch, const float* q, int splits, float* partials,
                 cudaStream_t stream) {
  const int groups = launch.num_heads / step.num_kv_heads;
  const int tiles = (groups + kGroupTile - 1) / kGroupTile;
  const dim3 grid(static_cast<unsigned>(step.num_decode_rows), static_cast<unsigned>(step.num_kv_heads * tiles),
                  static_cast<unsigned>(splits));
  const size_t smem = 2 * static_cast<size_t>(kWarps) * 32 * value_row_stride(step.entry_bytes);
  auto launch_kernel = [&](auto kernel) {
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "cudaFuncSetAttribute(decode_kernel)");
    kernel<<<grid, kWarps * 32, smem, stream>>>(step, launch, q, splits, partials);
  };
  switch (static_cast<KvDType>(step.dtype)) {
    case KvDType::F32: launch_kernel(decode_kernel<KvDType::F32>); break;
    case KvDType::F16: launch_kernel(decode_kernel<KvDType::F16>); break;
    case KvDType::BF16: launch_kernel(decode_kernel<KvDType::BF16>); break;
    case KvDType::Q8_0: launch_kernel(decode_kernel<KvDType::Q8_0>); break;
  }
  check_launch("decode_kernel");
}

}  // namespace

}  // namespace podkv::cuda
