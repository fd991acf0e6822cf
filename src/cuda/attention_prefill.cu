// Prefill attention on the tensor cores (flash-attention-2 style) for bf16 KV
// entries without selection stores. A warp (warp_attention.cuh) does 16
// consecutive query rows of one head; a block is 4 warps, 4 query heads of the
// same 16 rows. Two kernels:
//  - prefill_shared_kernel (4 | query heads per KV head, head_dim 64 or 128):
//    the 4 heads share one KV head, so 64-key tiles are copied once per block
//    into shared memory (cp.async, one tile ahead, double-buffered) and every
//    warp reads its fragments from there;
//  - prefill_kernel (any grouping, head_dim a multiple of 32): each warp reads
//    16-key tiles from the pool straight into registers, the next tile's loads
//    issued during this one's arithmetic.
// PoD's two key sources: when a head reads its distant keys from another
// layer (the block anchor), the proximal keys (sink + recent window, its own
// layer) and the distant ones (anchor's keys, its own values) are two passes
// over the key tiles with complementary masks; otherwise one pass. Tiles no
// row needs are skipped, and the tiles with the most keys (a prompt's last
// rows) start first. A head whose anchor gate is >= tau masks its distant
// keys (counted once per row). Q and P are rounded to bf16 as FlashAttention
// does; the cache's entries are bf16 already.
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

// One warp's 16 query rows of one head: where they are, which key streams they read, their token
// classes and tau skips, and the masks and output both prefill kernels share.
template <int D>
struct PrefillWarp {
  const DeviceStep& s;
  const AttentionLaunch& a;
  int i = 0, h = 0, b = 0;               // query head, KV head, batch entry
  int64_t row0 = 0, rows = 0, pos0 = 0;  // the tile's first row, row count, first position
  int kp = 0, vp = 0, kd = 0, vd = 0;    // layers of the proximal and distant keys and values
  bool one_pass = false, has_distant_source = false;
  int64_t last = 0, sink_max = 0, recent_min = 0, recent_max = 0, sink_min = 0;  // for skipping key tiles
  int64_t pos[2], s_end[2], r_begin[2];  // rows g and g + 8
  bool valid[2], distant[2], skip[2];
  WarpAttention<D, false> w;

  // Tiles in reverse: the last rows of a prompt have the most keys, and starting them first keeps
  // them out of the grid's last wave.
  __device__ PrefillWarp(const DeviceStep& s_, const AttentionLaunch& a_, const float* q, const int32_t* tiles,
                         int head, int lane)
      : s(s_), a(a_), i(head) {
    const int H = a.num_heads, Hkv = s.num_kv_heads, layer = a.layer;
    h = i / (H / Hkv);
    const int tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
    b = tiles[2 * tile];
    row0 = s.row_begin[b] + tiles[2 * tile + 1];
    rows = s.row_begin[b + 1] - row0 < kRows ? s.row_begin[b + 1] - row0 : kRows;
    pos0 = s.first_pos[b] + (row0 - s.row_begin[b]);
    const KvRule kr = s.key_rules[layer * Hkv + h];
    const KvRule vr = s.value_rules[layer * Hkv + h];
    const bool split = s.recent_tokens > 0;
    kp = source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, false);
    vp = source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, false);
    kd = source_layer(layer, kr.retention, kr.distant_source, kr.proximal_source, true);
    vd = source_layer(layer, vr.retention, vr.distant_source, vr.proximal_source, true);
    has_distant_source = kd >= 0 && vd >= 0;
    one_pass = has_distant_source && kd == kp && vd == vp;
    const bool shared_keys = kr.retention == kRetainWindow || kr.retention == kRetainNone;
    w.init(lane);
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
    last = pos0 + rows - 1;
    sink_max = sink_end(last, s.sink_tokens, split);
    recent_min = recent_begin(pos0, s.sink_tokens, s.recent_tokens, split);
    recent_max = recent_begin(last, s.sink_tokens, s.recent_tokens, split);
    sink_min = sink_end(pos0, s.sink_tokens, split);
  }

  __device__ int passes() const { return one_pass || !has_distant_source ? 1 : 2; }
  // Pass 0 reads the own streams (all keys when one_pass, else sink + recent); pass 1 the distant source.
  __device__ DeviceStream stream(int pass, int kind) const {
    const int layer = kind == podkv::kKeys ? (pass == 1 ? kd : kp) : (pass == 1 ? vd : vp);
    return stream_of(s, b, kind, layer, h);
  }
  // Whether some row of the tile needs keys [k0, k0 + keys) in this pass.
  __device__ bool needed(int pass, int64_t k0, int keys) const {
    if (one_pass) return true;
    if (pass == 1) return k0 < recent_max && k0 + keys > sink_min;
    return k0 < sink_max || k0 + keys > recent_min;
  }
  // Masks S of NB n-blocks of keys from k0 (causal, the pass's class, tau); returns the distant bits.
  template <int NB>
  __device__ uint32_t mask(float (&x)[NB][4], int64_t k0, int pass) const {
    uint32_t distant_bits = 0;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const int64_t j = k0 + 8 * nb + 2 * w.c + e % 2;
        const bool in_distant = distant[r] && j >= s_end[r] && j < r_begin[r];
        bool allowed = valid[r] && j <= pos[r];
        if (!one_pass) allowed = allowed && (pass == 1 ? in_distant : !in_distant);
        if (in_distant && skip[r]) allowed = false;
        if (!allowed) x[nb][e] = -INFINITY;
        if (in_distant) distant_bits |= 1u << (4 * nb + e);
      }
    return distant_bits;
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
      float* out = a.out + (row * H + i) * D;
#pragma unroll
      for (int nb = 0; nb < WarpAttention<D, false>::kOutBlocks; ++nb)
#pragma unroll
        for (int e = 2 * r; e < 2 * r + 2; ++e) {
          const int d = w.out_element(nb, e);
          if (d < D) out[d] = w.o[nb][e] / total;
        }
      if (a.all_gates != nullptr && w.c == 0)
        a.all_gates[(static_cast<int64_t>(a.layer) * s.rows + row) * H + i] = w.sum_p[r] / total;
    }
  }
};

// The per-warp kernel (any grouping; head_dim a multiple of 32): 16-key tiles straight into registers.
template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_kernel(DeviceStep s, AttentionLaunch a, const float* q, const int32_t* tiles) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int head = blockIdx.y * kWarps + warp;
  if (head >= a.num_heads) return;
  PrefillWarp<D> pw(s, a, q, tiles, head, lane);
  WarpAttention<D, false>& w = pw.w;
  const int64_t last = pw.last;
  const int passes = pw.passes();
  struct Cursor {
    int pass;
    int64_t k0;
  };
  auto advance = [&](Cursor c) {  // the next needed tile after c (pass == passes: none)
    for (;;) {
      c.k0 += 16;
      if (c.k0 > last) c.pass += 1, c.k0 = 0;
      if (c.pass >= passes || pw.needed(c.pass, c.k0, 16)) return c;
    }
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
  Cursor cur = advance(Cursor{0, -16});
  DeviceStream ks{}, vs{};
  if (cur.pass < passes) {
    ks = pw.stream(cur.pass, podkv::kKeys), vs = pw.stream(cur.pass, podkv::kValues);
    load_keys(cur, ks);
    load_values(cur, vs);
  }
  // Software-pipelined: the next tile's keys load during this tile's softmax and P V, its values
  // during the next Q Kᵀ.
  while (cur.pass < passes) {
    const Cursor next = advance(cur);
    DeviceStream next_ks = ks, next_vs = vs;
    if (next.pass < passes && next.pass != cur.pass)
      next_ks = pw.stream(next.pass, podkv::kKeys), next_vs = pw.stream(next.pass, podkv::kValues);
    float x[2][4];
#pragma unroll
    for (int nb = 0; nb < 2; ++nb) w.scores(k[nb], x[nb]);
    const uint32_t distant_bits = pw.mask(x, cur.k0, cur.pass);
    if (next.pass < passes) load_keys(next, next_ks);
    w.softmax(x, distant_bits);
    w.accumulate(x, v);
    if (next.pass < passes) load_values(next, next_vs);
    cur = next, ks = next_ks, vs = next_vs;
  }
  pw.write();
}

// ---- The block-shared variant (GQA with 4 | query heads per KV head, head_dim 64 or 128): the
// block's 4 warps are 4 query heads of one KV head on the same 16 rows, so they read the same
// keys and values. Tiles of 64 keys go through shared memory, copied by the whole block with
// cp.async one tile ahead (double-buffered): the copy of the next tile overlaps this one's
// arithmetic, and each warp's fragments come from shared memory, not from the L1 or L2. A tile's
// 16-byte chunks are stored XOR-swizzled by row so that the warps' fragment reads hit distinct banks.
constexpr int kSmemTileKeys = 64;

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Where chunk c of tile row r is stored: its low 3 bits XORed with (r & 6) ^ 4 (r & 1). Key
// fragment reads (rows g, chunks 4j + c) and value fragment reads (rows 2c + {0, 1, 8, 9},
// chunks g + 8h) then fall on 8 distinct 16-byte bank groups per quarter warp.
__device__ __forceinline__ int swizzle(int r, int c) { return c ^ ((r & 6) ^ ((r & 1) << 2)); }

template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_shared_kernel(DeviceStep s, AttentionLaunch a, const float* q, const int32_t* tiles) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  extern __shared__ uint4 tile_smem[];  // [stage 2][keys, values][64 rows][kChunks]
  __shared__ const uint8_t* row_ptr[2][2 * kSmemTileKeys];
  auto stage_rows = [&](int st, int kind) { return tile_smem + (st * 2 + kind) * kSmemTileKeys * kChunks; };

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // The four warps: query heads 4y .. 4y + 3, one KV head, the same rows and tiles.
  PrefillWarp<D> pw(s, a, q, tiles, blockIdx.y * kWarps + warp, lane);
  using W = WarpAttention<D, false>;
  W& w = pw.w;
  const int64_t last = pw.last;
  // 64-key tiles in order: pass 0 over the own streams, pass 1 over the distant source (as the
  // per-warp kernel), skipping tiles no row needs; the cursor is the same in every thread.
  const int passes = pw.passes();
  struct Cursor {
    int pass;
    int64_t k0;
  };
  auto advance = [&](Cursor c) {
    for (;;) {
      c.k0 += kSmemTileKeys;
      if (c.k0 > last) c.pass += 1, c.k0 = 0;
      if (c.pass >= passes || pw.needed(c.pass, c.k0, kSmemTileKeys)) return c;
    }
  };
  // Queues the copy of tile c into stage st (every thread takes part).
  auto fetch = [&](const Cursor& c, int st) {
    {
      const int t = threadIdx.x;
      const int64_t j = c.k0 + t % kSmemTileKeys;
      const DeviceStream stream = pw.stream(c.pass, t < kSmemTileKeys ? podkv::kKeys : podkv::kValues);
      row_ptr[st][t] = j <= last ? entry_at(s, stream, j) : nullptr;
    }
    __syncthreads();
    for (int x = threadIdx.x; x < 2 * kSmemTileKeys * kChunks; x += kWarps * 32) {
      const int row = x / kChunks, ch = x % kChunks, r = row % kSmemTileKeys;
      const uint8_t* src = row_ptr[st][row];
      uint4* dst = stage_rows(st, row / kSmemTileKeys) + r * kChunks + swizzle(r, ch);
      cp_async16(dst, src != nullptr ? src + 16 * ch : s.pool, src != nullptr);
    }
    cp_async_commit();
  };

  Cursor cur = advance(Cursor{0, -kSmemTileKeys});
  if (cur.pass < passes) fetch(cur, 0);
  int st = 0;
  while (cur.pass < passes) {
    const Cursor next = advance(cur);
    __syncthreads();  // every warp is done with stage st ^ 1 (the tile before cur)
    if (next.pass < passes) {
      fetch(next, st ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // stage st is complete for every thread
    const uint4* K = stage_rows(st, 0);
    const uint4* V = stage_rows(st, 1);
    float x[8][4];
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
      const int r = 8 * nb + w.g;  // this lane's key row of the n-block
      uint4 k[W::kKeyChunks];
#pragma unroll
      for (int j = 0; j < W::kKeyChunks; ++j) k[j] = K[r * kChunks + swizzle(r, 4 * j + w.c)];
      w.scores(k, x[nb]);
    }
    const uint32_t distant_bits = pw.mask(x, cur.k0, cur.pass);
    w.softmax(x, distant_bits);
#pragma unroll
    for (int u = 0; u < 4; ++u) {  // 16 keys per k-step of P V
      uint4 v[4][W::kValueHalves];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = 16 * u + 2 * w.c + e % 2 + 8 * (e / 2);
#pragma unroll
        for (int hh = 0; hh < W::kValueHalves; ++hh) v[e][hh] = V[r * kChunks + swizzle(r, w.g + 8 * hh)];
      }
      const float p[2][4] = {{x[2 * u][0], x[2 * u][1], x[2 * u][2], x[2 * u][3]},
                             {x[2 * u + 1][0], x[2 * u + 1][1], x[2 * u + 1][2], x[2 * u + 1][3]}};
      w.accumulate(p, v);
    }
    cur = next, st ^= 1;
  }
  pw.write();
}

template <int D>
void launch_shared(const dim3& grid, cudaStream_t stream, const DeviceStep& step, const AttentionLaunch& launch,
                   const float* q, const int32_t* tiles) {
  const int smem = 2 * 2 * kSmemTileKeys * (D / 8) * 16;
  check_cuda(cudaFuncSetAttribute(prefill_shared_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
             "cudaFuncSetAttribute(prefill_shared_kernel)");
  prefill_shared_kernel<D><<<grid, kWarps * 32, smem, stream>>>(step, launch, q, tiles);
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
  const int groups = launch.num_heads / step.num_kv_heads;
  if (groups % kWarps == 0 && (step.head_dim == 64 || step.head_dim == 128)) {
    if (step.head_dim == 64) launch_shared<64>(grid, stream, step, launch, q, tiles);
    else launch_shared<128>(grid, stream, step, launch, q, tiles);
    check_launch("prefill_shared_kernel");
    return;
  }
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
