// What the prefill attention kernels share (attention_prefill.cu: mma.sync; sm90a/
// attention_prefill_wgmma.cu: wgmma): the tile list's rows, the key classes a run of rows reads
// (PoD's proximal and distant tokens; with the key tiles' walk, in tile_walk.h), one warp's 16
// query rows of one head with its masks, online softmax and output, and the cp.async helpers.
// A warp (warp_attention.cuh) does 16 consecutive query rows of one head; a warp group is 4
// warps, 4 query heads of the same 16 rows; the host lists the prompt rows in tiles of 32 (two
// groups' rows).
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/device_step.h"
#include "cuda/elements.cuh"
#include "cuda/paged.cuh"
#include "cuda/tile_walk.h"
#include "cuda/warp_attention.cuh"
#include "kv/token_classes.h"

namespace podkv::cuda::prefill {

constexpr int kRows = 16;      // query rows per warp (the mma's M)
constexpr int kTileRows = 32;  // query rows per entry of the tile list: two warps' rows
constexpr int kWarps = 4;      // query heads per warp group

// The rows [row0, row0 + rows) of batch entry b that a warp (group) takes; rows <= 0 past the
// entry's end.
struct RowTile {
  int b = 0;
  int64_t row0 = 0, rows = 0;
};

// `count` 16-row halves from half `first` of entry `tile` of the tile list (32 rows each).
__device__ __forceinline__ RowTile row_tile(const DeviceStep& s, const int32_t* tiles, int tile, int first,
                                            int count) {
  RowTile t;
  t.b = tiles[2 * tile];
  t.row0 = s.row_begin[t.b] + tiles[2 * tile + 1] + kRows * first;
  const int64_t left = s.row_begin[t.b + 1] - t.row0;
  t.rows = left < kRows * count ? left : kRows * count;
  return t;
}

// The key and value streams one query head reads (the layers of its KV head's proximal and distant
// keys and values, pod-method.md's rules) and in how many passes: what the warps of a head and a
// block's copying warp (which loads no query) both need.
struct HeadSources {
  const DeviceStep& s;
  int h = 0, b = 0;                      // KV head, batch entry
  int kp = 0, vp = 0, kd = 0, vd = 0;    // layers of the proximal and distant keys and values
  int distant_source = -1;               // the key rule's anchor layer (-1: none)
  bool one_pass = false, has_distant_source = false, shared_keys = false;

  __device__ HeadSources(const DeviceStep& s_, const AttentionLaunch& a, int head, int b_) : s(s_), b(b_) {
    const int Hkv = s.num_kv_heads, layer = a.layer;
    h = head / (a.num_heads / Hkv);
    const KvRule kr = s.key_rules[layer * Hkv + h];
    const KvRule vr = s.value_rules[layer * Hkv + h];
    kp = source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, false);
    vp = source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, false);
    kd = source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, true);
    vd = source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, true);
    distant_source = kr.distant_source;
    has_distant_source = kd >= 0 && vd >= 0;
    one_pass = has_distant_source && kd == kp && vd == vp;
    shared_keys = kr.retention == kRetainWindow || kr.retention == kRetainNone;
  }
  __device__ int passes() const { return one_pass || !has_distant_source ? 1 : 2; }
  // Pass 0 reads the own streams (all keys when one_pass, else sink + recent); pass 1 the distant source.
  __device__ DeviceStream stream(int pass, int kind) const {
    const int layer = kind == podkv::kKeys ? (pass == 1 ? kd : kp) : (pass == 1 ? vd : vp);
    return stream_of(s, b, kind, layer, h);
  }
};

// One warp's 16 query rows of one head: where they are, which key streams they read, their token
// classes and tau skips, and the masks and output the prefill kernels share. kInOrder: Q's
// fragments and O's columns in the mma's own order (the wgmma kernel, whose keys and values come
// from shared memory in head order), else in WarpAttention's permuted one.
template <int D, bool kInOrder = false>
struct PrefillWarp : HeadSources {
  const AttentionLaunch& a;
  int i = 0;                             // query head
  int64_t row0 = 0, rows = 0;            // the warp's first row, row count (<= 0: none)
  bool any_skip = false;
  KeySpan span;                          // the keys of these rows
  int32_t pos[2], s_end[2], r_begin[2];  // rows g and g + 8
  bool valid[2], distant[2], skip[2];
  WarpAttention<D, false> w;

  __device__ PrefillWarp(const DeviceStep& s_, const AttentionLaunch& a_, const float* q, const RowTile& t, int head,
                         int lane)
      : HeadSources(s_, a_, head, t.b), a(a_), i(head), row0(t.row0), rows(t.rows),
        span(s_, s_.first_pos[t.b] + (t.row0 - s_.row_begin[t.b]), t.rows) {
    const int H = a.num_heads;
    w.init(lane);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int t_ = w.g + 8 * r;
      pos[r] = span.pos0 + t_;
      valid[r] = t_ < rows;
      s_end[r] = static_cast<int32_t>(sink_end(pos[r], s.sink_tokens, span.split));
      r_begin[r] = static_cast<int32_t>(recent_begin(pos[r], s.sink_tokens, s.recent_tokens, span.split));
      distant[r] = span.split && r_begin[r] > s_end[r];
      skip[r] = valid[r] && distant[r] && shared_keys && distant_source >= 0 && a.tau < 1.0f &&
                a.all_gates != nullptr && a.all_gates[(distant_source * s.rows + row0 + t_) * H + i] >= a.tau;
      if (skip[r] && w.c == 0) atomicAdd(a.skipped, 1ULL);
    }
    any_skip = __any_sync(0xffffffffu, skip[0] || skip[1]);
    if (a.q_bf16 != nullptr) {  // rounded and scaled already (AttentionLaunch::q_bf16)
      const uint16_t* qrow = a.q_bf16 + (row0 * H + i) * D;
      const uint16_t* row_g = w.g < rows ? qrow + w.g * H * D : nullptr;
      const uint16_t* row_g8 = w.g + 8 < rows ? qrow + (w.g + 8) * H * D : nullptr;
      if constexpr (kInOrder) w.load_q_bf16_in_order(row_g, row_g8);
      else w.load_q_bf16(row_g, row_g8);
      return;
    }
    const float* qrow = q + (row0 * H + i) * D;
    const float* row_g = w.g < rows ? qrow + w.g * H * D : nullptr;
    const float* row_g8 = w.g + 8 < rows ? qrow + (w.g + 8) * H * D : nullptr;
    if constexpr (kInOrder) w.load_q_in_order(row_g, row_g8, a.scale * 1.4426950408889634f);
    else w.load_q(row_g, row_g8, a.scale * 1.4426950408889634f);
  }

  __device__ bool needed(int pass, int32_t k0, int keys) const { return span.needed(one_pass, pass, k0, keys); }
  // Masks S of NB n-blocks of keys from k0 (causal, the pass's class, tau), n-blocks kFirst ..
  // kFirst + NB - 1 of x; returns the distant bits (bit 4 nb + e).
  template <int NB, int kFirst = 0, int N>
  __device__ uint32_t mask(float (&x)[N][4], int32_t k0, int pass) const {
    static_assert(NB <= 8 && kFirst + NB <= N, "up to 64 keys of x from kFirst");
    uint32_t distant_bits = 0;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const int32_t j = k0 + 8 * nb + 2 * w.c + e % 2;
        const bool in_distant = distant[r] && j >= s_end[r] && j < r_begin[r];
        bool allowed = valid[r] && j <= pos[r];
        if (!one_pass) allowed = allowed && (pass == 1 ? in_distant : !in_distant);
        if (in_distant && skip[r]) allowed = false;
        if (!allowed) x[kFirst + nb][e] = -INFINITY;
        if (in_distant) distant_bits |= 1u << (4 * nb + e);
      }
    return distant_bits;
  }
  // The masks of NB n-blocks of keys from k0 (x's n-blocks from kFirst), skipped where every row
  // reads the whole tile, of one class that this pass reads (`uniform`, when allowed): most tiles
  // of a long prompt are such, and the mask's compares cost as much issue time as the tile's
  // products. Returns the distant bits.
  template <int NB, int kFirst = 0, int N>
  __device__ __forceinline__ uint32_t tile_masks(float (&x)[N][4], int32_t k0, int pass, bool uniform) const {
    const TileClass cls = uniform ? span.uniform(k0, 8 * NB) : kMixed;
    const bool pass_reads = one_pass || (pass == 0 ? cls == kProximal : cls == kDistant);
    if (cls == kDistant && pass_reads && !any_skip) return 0xffffffffu;
    if (cls != kProximal || !pass_reads) return mask<NB, kFirst>(x, k0, pass);
    return 0;
  }
  // S of NB n-blocks of keys from k0 into this tile's weights (the online softmax, tile_masks'
  // masks). Rows past the warp's end read Q = 0; their outputs are never written.
  template <int NB>
  __device__ __forceinline__ void weights(float (&x)[NB][4], int32_t k0, int pass, bool uniform) {
    float correction[2];
    weights(x, k0, pass, uniform, correction);
    w.rescale(correction);
  }
  // The same without O's rescaling: w.rescale(correction) is the caller's.
  template <int NB>
  __device__ __forceinline__ void weights(float (&x)[NB][4], int32_t k0, int pass, bool uniform, float (&correction)[2]) {
    w.softmax_weights(x, tile_masks<NB>(x, k0, pass, uniform), correction);
  }
  // Two 64-key tiles' weights in one update (x[0..7]: tile t0, x[8..15]: tile t1). Where t0 was the
  // last tile, t1 is the cursor just past it, keys that no row of the pass reads: its masks remove
  // them all (no branch on it, which made ptxas copy S's 64 registers on both paths).
  __device__ __forceinline__ void weights(float (&x)[16][4], const TileCursor& t0, const TileCursor& t1, bool uniform,
                                          float (&correction)[2]) {
    const uint32_t lo = tile_masks<8, 0>(x, t0.k0, t0.pass, uniform);
    const uint32_t hi = tile_masks<8, 8>(x, t1.k0, t1.pass, uniform);
    w.softmax_weights(x, static_cast<uint64_t>(hi) << 32 | lo, correction);
  }
  // The normalised outputs and the gates.
  __device__ void write() {
    w.reduce_sums();
    const int H = a.num_heads;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (!valid[r]) continue;
      const int64_t row = row0 + w.g + 8 * r;
      const float total = w.sum_p[r] + w.sum_d[r];
      const int64_t at = (row * H + i) * D;
#pragma unroll
      for (int nb = 0; nb < WarpAttention<D, false>::kOutBlocks; ++nb) {
        const float v0 = w.o[nb][2 * r] / total, v1 = w.o[nb][2 * r + 1] / total;
        const int d0 = kInOrder ? 8 * nb + 2 * w.c : w.out_element(nb, 2 * r);
        const int d1 = kInOrder ? d0 + 1 : w.out_element(nb, 2 * r + 1);
        if (a.out_bf16 == nullptr) {
          if (d0 < D) a.out[at + d0] = v0;
          if (d1 < D) a.out[at + d1] = v1;
        } else if (kInOrder && d1 < D) {  // d0 even, rows of even length: one 4-byte store
          *reinterpret_cast<uint32_t*>(a.out_bf16 + at + d0) =
              f32_to_bf16_bits(v0) | uint32_t{f32_to_bf16_bits(v1)} << 16;
        } else {
          if (d0 < D) a.out_bf16[at + d0] = f32_to_bf16_bits(v0);
          if (d1 < D) a.out_bf16[at + d1] = f32_to_bf16_bits(v1);
        }
      }
      if (a.all_gates != nullptr && w.c == 0)
        a.all_gates[(static_cast<int64_t>(a.layer) * s.rows + row) * H + i] = w.sum_p[r] / total;
    }
  }
};

// Tiles of 64 keys go through shared memory in the block-shared kernels.
constexpr int kSmemTileKeys = 64;

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

}  // namespace podkv::cuda::prefill
