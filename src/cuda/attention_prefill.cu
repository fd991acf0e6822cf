// Prefill attention on the tensor cores (flash-attention-2 style) for bf16 KV
// entries without selection stores: warp_attention.cuh's warp does 16
// consecutive query rows of one head, reading 16-key tiles of the paged cache
// straight into registers. A block is 4 warps: 4 query heads of the same 16
// rows, so with GQA they read the same keys and values and the block's L1
// serves the other three.
// PoD's two key sources: when a head reads its distant keys from another
// layer (the block anchor), the proximal keys (sink + recent window, its own
// layer) and the distant ones (anchor's keys, its own values) are two passes
// over the key tiles with complementary masks; otherwise one pass. Tiles no
// row of the warp needs are skipped. A head whose anchor gate is >= tau masks
// its distant keys (counted once per row). Q and P are rounded to bf16 like
// FlashAttention's; the cache's entries are bf16 already.
#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"
#include "cuda/paged.cuh"
#include "cuda/warp_attention.cuh"
#include "kv/token_classes.h"

namespace podkv::cuda {

namespace {

constexpr int kRows = 16;   // query rows per tile (the mma's M)
constexpr int kWarps = 4;   // query heads per block

template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_kernel(DeviceStep s, AttentionLaunch a, const float* q, const int32_t* tiles) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int H = a.num_heads, Hkv = s.num_kv_heads, layer = a.layer;
  const int i = blockIdx.y * kWarps + warp;  // query head
  if (i >= H) return;
  const int h = i / (H / Hkv);
  // Tiles in reverse: the last rows of a prompt have the most keys, and starting them first keeps
  // them out of the grid's last wave.
  const int tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  const int b = tiles[2 * tile];
  const int64_t row0 = s.row_begin[b] + tiles[2 * tile + 1];
  const int64_t rows = s.row_begin[b + 1] - row0 < kRows ? s.row_begin[b + 1] - row0 : kRows;
  const int64_t pos0 = s.first_pos[b] + (row0 - s.row_begin[b]);

  const KvRule kr = s.key_rules[layer * Hkv + h];
  const KvRule vr = s.value_rules[layer * Hkv + h];
  const bool split = s.recent_tokens > 0;
  const int kp = source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, false);
  const int vp = source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, false);
  const int kd = source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, true);
  const int vd = source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, true);
  const bool has_distant_source = kd >= 0 && vd >= 0;
  const bool one_pass = has_distant_source && kd == kp && vd == vp;
  const bool shared_keys = kr.retention == kRetainWindow || kr.retention == kRetainNone;

  WarpAttention<D, false> w;
  w.init(lane);
  // Rows g and g + 8 of the tile: position, classes, tau skip.
  int64_t pos[2], s_end[2], r_begin[2];
  bool valid[2], distant[2], skip[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int t = w.g + 8 * r;
    pos[r] = pos0 + t;
    valid[r] = t < rows;
    s_end[r] = sink_end(pos[r], s.sink_tokens, split);
    r_begin[r] = recent_begin(pos[r], s.sink_tokens, s.recent_tokens, split);
    distant[r] = split && r_begin[r] > s_end[r];
    skip[r] = valid[r] && distant[r] && shared_keys && kr.distant_source >= 0 && a.tau < 1.0f &&
              a.all_gates != nullptr && a.all_gates[(kr.distant_source * s.rows + row0 + t) * H + i] >= a.tau;
    if (skip[r] && w.c == 0) atomicAdd(a.skipped, 1ULL);
  }
  const float* qrow = q + (row0 * H + i) * D;
  w.load_q(w.g < rows ? qrow + w.g * H * D : nullptr, w.g + 8 < rows ? qrow + (w.g + 8) * H * D : nullptr,
           a.scale * 1.4426950408889634f);
  // The tile's extremes for skipping key tiles: positions pos0 .. last.
  const int64_t last = pos0 + rows - 1;
  const int64_t sink_max = sink_end(last, s.sink_tokens, split);
  const int64_t recent_min = recent_begin(pos0, s.sink_tokens, s.recent_tokens, split);
  const int64_t recent_max = recent_begin(last, s.sink_tokens, s.recent_tokens, split);
  const int64_t sink_min = sink_end(pos0, s.sink_tokens, split);

  // The key tiles in order: pass 0 over the own streams (all keys when one_pass, else sink +
  // recent), pass 1 over the distant source; tiles no row of the warp needs are skipped.
  const int passes = one_pass || !has_distant_source ? 1 : 2;
  auto needed = [&](int pass, int64_t k0) {
    const int64_t k1 = k0 + 16;
    if (one_pass) return true;
    if (pass == 1) return k0 < recent_max && k1 > sink_min;
    return k0 < sink_max || k1 > recent_min;
  };
  struct Cursor {
    int pass;
    int64_t k0;
  };
  auto advance = [&](Cursor c) {  // the next needed tile after c (pass == passes: none)
    for (;;) {
      c.k0 += 16;
      if (c.k0 > last) c.pass += 1, c.k0 = 0;
      if (c.pass >= passes || needed(c.pass, c.k0)) return c;
    }
  };
  auto streams = [&](int pass, DeviceStream& ks, DeviceStream& vs) {
    ks = stream_of(s, b, podkv::kKeys, pass == 1 ? kd : kp, h);
    vs = stream_of(s, b, podkv::kValues, pass == 1 ? vd : vp, h);
  };
  using W = WarpAttention<D, false>;
  uint4 k[2][W::kKeyChunks];
  uint4 v[4][W::kValueHalves];
  auto load_keys = [&](const Cursor& c, const DeviceStream& ks) {
#pragma unroll
    for (int nb = 0; nb < 2; ++nb) {
      const int64_t j = c.k0 + w.g + 8 * nb;
      w.load_key(j <= last ? entry_at(s, ks, j) : nullptr, k[nb]);
    }
  };
  auto load_values = [&](const Cursor& c, const DeviceStream& vs) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t j = c.k0 + 2 * w.c + e % 2 + 8 * (e / 2);
      w.load_value(j <= last ? entry_at(s, vs, j) : nullptr, v[e]);
    }
  };
  Cursor cur{0, -16};
  cur = advance(cur);
  DeviceStream ks, vs;
  if (cur.pass < passes) {
    streams(cur.pass, ks, vs);
    load_keys(cur, ks);
    load_values(cur, vs);
  }
  // Software-pipelined: the next tile's keys load during this tile's softmax and P V, its values
  // during the next Q Kᵀ.
  while (cur.pass < passes) {
    const Cursor next = advance(cur);
    DeviceStream next_ks = ks, next_vs = vs;
    if (next.pass < passes && next.pass != cur.pass) streams(next.pass, next_ks, next_vs);
    const bool dist_pass = cur.pass == 1;
    float x[2][4];
    uint32_t distant_bits = 0;
#pragma unroll
    for (int nb = 0; nb < 2; ++nb) {
      w.scores(k[nb], x[nb]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const int64_t j = cur.k0 + 8 * nb + 2 * w.c + e % 2;
        const bool in_distant = distant[r] && j >= s_end[r] && j < r_begin[r];
        bool allowed = valid[r] && j <= pos[r];
        if (!one_pass) allowed = allowed && (dist_pass ? in_distant : !in_distant);
        if (in_distant && skip[r]) allowed = false;
        if (!allowed) x[nb][e] = -INFINITY;
        if (in_distant) distant_bits |= 1u << (4 * nb + e);
      }
    }
    if (next.pass < passes) load_keys(next, next_ks);
    w.softmax(x, distant_bits);
    w.accumulate(x, v);
    if (next.pass < passes) load_values(next, next_vs);
    cur = next, ks = next_ks, vs = next_vs;
  }
  w.reduce_sums();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (!valid[r]) continue;
    const int64_t row = row0 + w.g + 8 * r;
    const float total = w.sum_p[r] + w.sum_d[r];
    float* out = a.out + (row * H + i) * D;
#pragma unroll
    for (int nb = 0; nb < WarpAttention<D, false>::kOutBlocks; ++nb)
#pragma unroll
      for (int e = 2 * r; e < 2 * r + 2; ++e) {
        const int d = w.out_element(nb, e);
        if (d < D) out[d] = w.o[nb][e] / total;
      }
    if (a.all_gates != nullptr && w.c == 0)
      a.all_gates[(static_cast<int64_t>(layer) * s.rows + row) * H + i] = w.sum_p[r] / total;
  }
}

}  // namespace

bool prefill_attention_fits(int head_dim, int32_t kv_dtype, int num_groups) {
  return static_cast<KvDType>(kv_dtype) == KvDType::BF16 && head_dim % 32 == 0 && head_dim <= kMaxHeadDim &&
         num_groups == 0;
}

void prefill_attention(const DeviceStep& step, const AttentionLaunch& launch, const float* q, const int32_t* tiles,
                       int64_t num_tiles, cudaStream_t stream) {
  if (num_tiles == 0) return;
  check(prefill_attention_fits(step.head_dim, step.dtype, step.num_groups),
        "cuda prefill attention: needs bf16 entries, head_dim a multiple of 32 up to 128 and no selection");
  const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>((launch.num_heads + kWarps - 1) / kWarps));
  auto launch_kernel = [&](auto kernel) { kernel<<<grid, kWarps * 32, 0, stream>>>(step, launch, q, tiles); };
  switch (step.head_dim) {
    case 32: launch_kernel(prefill_kernel<32>); break;
    case 64: launch_kernel(prefill_kernel<64>); break;
    case 96: launch_kernel(prefill_kernel<96>); break;
    default: launch_kernel(prefill_kernel<128>); break;
  }
  check_launch("prefill_kernel");
}

int prefill_tile_rows() { return kRows; }

}  // namespace podkv::cuda
