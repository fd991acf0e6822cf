// Prefill attention on the tensor cores (flash-attention-2 style) for bf16 KV
// entries without selection stores. A warp (warp_attention.cuh) does 16
// consecutive query rows of one head; a warp group is 4 warps, 4 query heads
// of the same 16 rows; the host lists the prompt rows in tiles of 32 (two
// groups' rows). Two kernels:
//  - prefill_shared_kernel (4 | query heads per KV head, head_dim 64 or 128):
//    the 4 heads share one KV head, so 64-key tiles are copied once per block
//    into shared memory (cp.async, one tile ahead, double-buffered) and every
//    warp reads its fragments from there; a block is both groups of a tile
//    (8 warps, the default) or one (PODKV_CUDA_PREFILL);
//  - prefill_kernel (any grouping, head_dim a multiple of 32): a block is one
//    group; each warp reads 16-key tiles from the pool straight into registers,
//    the next tile's loads issued during this one's arithmetic.
// On a compute capability 9.0 GPU with head_dim 128, sm90a/attention_prefill_wgmma.cu takes the
// shared kernel's place (the same blocks and masks, the products on wgmma).
// PoD's two key sources: when a head reads its distant keys from another
// layer (the block anchor), the proximal keys (sink + recent window, its own
// layer) and the distant ones (anchor's keys, its own values) are two passes
// over the key tiles with complementary masks; otherwise one pass. Tiles no
// row needs are skipped, tiles every row reads whole and of one class skip
// the element-wise mask, and the tiles with the most keys (a prompt's last
// rows) start first. A head whose anchor gate is >= tau masks its distant
// keys (counted once per row). Q and P are rounded to bf16 as FlashAttention
// does; the cache's entries are bf16 already.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"
#include "cuda/prefill_warp.cuh"

namespace podkv::cuda {

namespace {

using namespace prefill;

// The per-warp kernel (any grouping; head_dim a multiple of 32): 16-key tiles straight into registers.
// A block is 4 query heads of one 16-row half of a tile-list entry (two blocks per entry, the
// entries in reverse: a prompt's last rows have the most keys, and starting them first keeps them
// out of the grid's last wave).
template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_kernel(DeviceStep s, AttentionLaunch a, const float* q, const int32_t* tiles, bool uniform) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int head = blockIdx.y * kWarps + warp;
  const int idx = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  const RowTile rt = row_tile(s, tiles, idx / 2, idx % 2, 1);
  if (head >= a.num_heads || rt.rows <= 0) return;
  PrefillWarp<D> pw(s, a, q, rt, head, lane);
  WarpAttention<D, false>& w = pw.w;
  const int32_t last = pw.span.last;
  const int passes = pw.passes();
  using Cursor = TileCursor;
  auto advance = [&](Cursor c) { return next_tile(c, pw.span, pw.one_pass, passes, 16); };
  using W = WarpAttention<D, false>;
  uint4 k[2][W::kKeyChunks];
  uint4 v[4][W::kValueHalves];
  auto load_keys = [&](const Cursor& c, const DeviceStream& ks) {
#pragma unroll
    for (int nb = 0; nb < 2; ++nb) {
      const int32_t j = c.k0 + w.g + 8 * nb;
      w.load_key(j <= last ? entry_at(s, ks, j) : nullptr, k[nb]);
    }
  };
  auto load_values = [&](const Cursor& c, const DeviceStream& vs) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int32_t j = c.k0 + 2 * w.c + e % 2 + 8 * (e / 2);
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
    if (next.pass < passes) load_keys(next, next_ks);
    pw.weights(x, cur.k0, cur.pass, uniform);
    w.accumulate(x, v);
    if (next.pass < passes) load_values(next, next_vs);
    cur = next, ks = next_ks, vs = next_vs;
  }
  pw.write();
}

// ---- The block-shared variant (GQA with 4 | query heads per KV head, head_dim 64 or 128): a warp
// group is 4 query heads of one KV head on the same 16 rows, so its warps read the same keys and
// values. kGroups groups per block: 1, a block per 16-row half of a tile-list entry; 2, both
// halves (8 warps), so that each key tile copied serves 32 rows. Tiles of 64 keys go through
// shared memory, copied by the whole block with cp.async one tile ahead (double-buffered): the
// copy of the next tile overlaps this one's arithmetic, and each warp's fragments come from shared
// memory, not from the L1 or L2. A tile's 16-byte chunks are stored XOR-swizzled by row so that
// the warps' fragment reads hit distinct banks.
// Where chunk c of tile row r is stored: its low 3 bits XORed with (r & 6) ^ 4 (r & 1). Key
// fragment reads (rows g, chunks 4j + c) and value fragment reads (rows 2c + {0, 1, 8, 9},
// chunks g + 8h) then fall on 8 distinct 16-byte bank groups per quarter warp.
__device__ __forceinline__ int swizzle(int r, int c) { return c ^ ((r & 6) ^ ((r & 1) << 2)); }

// Queues the copy of the 64-key tile at k0 of pass `pass` (the keys and values of pw's streams;
// every warp of the block reads the same KV head of the same entry) into shared memory and
// commits it: the entries' addresses into row_ptr[2 x 64] (shared: keys, then values; null past
// `last` or where no page holds the entry, copied as zeros), then each 16-byte chunk ch of row r
// of kind k (0 keys, 1 values) to to(k, r, ch). Every thread of the block takes part.
template <int D, int kThreads, typename Warp, typename Destination>
__device__ __forceinline__ void fetch_tile(const DeviceStep& s, const Warp& pw, int pass, int32_t k0, int32_t last,
                                           const uint8_t** row_ptr, Destination to) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  if (threadIdx.x < 2 * kSmemTileKeys) {
    const int t = threadIdx.x;
    const int32_t j = k0 + t % kSmemTileKeys;
    const DeviceStream stream = pw.stream(pass, t < kSmemTileKeys ? podkv::kKeys : podkv::kValues);
    row_ptr[t] = j <= last ? entry_at(s, stream, j) : nullptr;
  }
  __syncthreads();
  for (int x = threadIdx.x; x < 2 * kSmemTileKeys * kChunks; x += kThreads) {
    const int row = x / kChunks, ch = x % kChunks;
    const uint8_t* src = row_ptr[row];
    cp_async16(to(row / kSmemTileKeys, row % kSmemTileKeys, ch), src != nullptr ? src + 16 * ch : s.pool,
               src != nullptr);
  }
  cp_async_commit();
}

template <int D, int kGroups>
__global__ void __launch_bounds__(kGroups * kWarps * 32)
    prefill_shared_kernel(DeviceStep s, AttentionLaunch a, const float* q, const int32_t* tiles, bool uniform) {
  constexpr int kThreads = kGroups * kWarps * 32;
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  extern __shared__ uint4 tile_smem[];  // [stage 2][keys, values][64 rows][kChunks]
  __shared__ const uint8_t* row_ptr[2][2 * kSmemTileKeys];
  auto stage_rows = [&](int st, int kind) { return tile_smem + (st * 2 + kind) * kSmemTileKeys * kChunks; };

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int idx = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  const int tile = kGroups == 2 ? idx : idx / 2, first = kGroups == 2 ? 0 : idx % 2;
  const RowTile block_rows = row_tile(s, tiles, tile, first, kGroups);
  if (block_rows.rows <= 0) return;  // the whole block: a second half past its entry's end
  // This warp: query head 4y + warp % 4 (the group's four share one KV head), rows of its group.
  const RowTile rt = row_tile(s, tiles, tile, first + warp / kWarps, 1);
  PrefillWarp<D> pw(s, a, q, rt, blockIdx.y * kWarps + warp % kWarps, lane);
  using W = WarpAttention<D, false>;
  W& w = pw.w;
  // 64-key tiles in order over the block's rows: pass 0 over the own streams, pass 1 over the
  // distant source (as the per-warp kernel), skipping tiles no row needs; the cursor is the same
  // in every thread. A warp whose own rows do not need a tile only helps copy it.
  const KeySpan block_span(s, s.first_pos[rt.b] + (block_rows.row0 - s.row_begin[rt.b]), block_rows.rows);
  const int32_t last = block_span.last;
  const int passes = pw.passes();
  using Cursor = TileCursor;
  auto advance = [&](Cursor c) { return next_tile(c, block_span, pw.one_pass, passes, kSmemTileKeys); };
  // Queues the copy of tile c into stage st (every thread takes part).
  auto fetch = [&](const Cursor& c, int st) {
    fetch_tile<D, kThreads>(s, pw, c.pass, c.k0, last, row_ptr[st], [&](int kind, int r, int ch) {
      return stage_rows(st, kind) + r * kChunks + swizzle(r, ch);
    });
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
    if (rt.rows > 0 && pw.needed(cur.pass, cur.k0, kSmemTileKeys)) {
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
      pw.weights(x, cur.k0, cur.pass, uniform);
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
    }
    cur = next, st ^= 1;
  }
  if (rt.rows > 0) pw.write();
}

template <int D, int kGroups>
void launch_shared(int64_t num_tiles, int head_blocks, cudaStream_t stream, const DeviceStep& step,
                   const AttentionLaunch& launch, const float* q, const int32_t* tiles, bool uniform) {
  const int smem = 2 * 2 * kSmemTileKeys * (D / 8) * 16;
  allow_dynamic_smem(reinterpret_cast<const void*>(prefill_shared_kernel<D, kGroups>), smem,
                     "cudaFuncSetAttribute(prefill_shared_kernel)");
  const dim3 grid(static_cast<unsigned>(num_tiles * (2 / kGroups)), static_cast<unsigned>(head_blocks));
  prefill_shared_kernel<D, kGroups><<<grid, kGroups * kWarps * 32, smem, stream>>>(step, launch, q, tiles, uniform);
}

// The switches, for timing and testing (scripts/tuning_gpu.sh, scripts/test_gpu.sh), read once:
// PODKV_CUDA_PREFILL=G,U (G warpgroups per block, 1 or 2; U=0 masks every tile),
// PODKV_CUDA_PREFILL_WGMMA=0 (the mma.sync kernels on a Hopper GPU too), PODKV_CUDA_PREFILL_PRODUCER=0
// and PODKV_CUDA_PREFILL_STEP=128 (kernels.h: WgmmaPrefill).
struct PrefillVariant {
  WgmmaPrefill how;
  bool wgmma = true;
};

PrefillVariant prefill_variant() {
  static const PrefillVariant v = [] {
    PrefillVariant out;
    const char* s = std::getenv("PODKV_CUDA_PREFILL");
    int g = 0, u = 0;
    if (s != nullptr && std::sscanf(s, "%d,%d", &g, &u) == 2 && (g == 1 || g == 2) && (u == 0 || u == 1))
      out.how.groups = g, out.how.uniform = u == 1;
    auto is = [](const char* name, const char* value) {
      const char* set = std::getenv(name);
      return set != nullptr && std::string(set) == value;
    };
    out.wgmma = !is("PODKV_CUDA_PREFILL_WGMMA", "0");
    out.how.producer = !is("PODKV_CUDA_PREFILL_PRODUCER", "0");
    out.how.step_keys = is("PODKV_CUDA_PREFILL_STEP", "128") ? 128 : 64;
    return out;
  }();
  return v;
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
  const PrefillVariant variant = prefill_variant();
  const int head_blocks = (launch.num_heads + kWarps - 1) / kWarps;
  const int groups = launch.num_heads / step.num_kv_heads;
  if (variant.wgmma && prefill_wgmma_fits(step.head_dim, groups)) {
    prefill_wgmma(step, launch, q, tiles, num_tiles, variant.how, stream);
    return;
  }
  if (groups % kWarps == 0 && (step.head_dim == 64 || step.head_dim == 128)) {
    const bool u = variant.how.uniform;
    if (variant.how.groups == 2) {
      if (step.head_dim == 64) launch_shared<64, 2>(num_tiles, head_blocks, stream, step, launch, q, tiles, u);
      else launch_shared<128, 2>(num_tiles, head_blocks, stream, step, launch, q, tiles, u);
    } else {
      if (step.head_dim == 64) launch_shared<64, 1>(num_tiles, head_blocks, stream, step, launch, q, tiles, u);
      else launch_shared<128, 1>(num_tiles, head_blocks, stream, step, launch, q, tiles, u);
    }
    check_launch("prefill_shared_kernel");
    return;
  }
  const dim3 grid(static_cast<unsigned>(2 * num_tiles), static_cast<unsigned>(head_blocks));
  auto launch_kernel = [&](auto kernel) {
    kernel<<<grid, kWarps * 32, 0, stream>>>(step, launch, q, tiles, variant.how.uniform);
  };
  switch (step.head_dim) {
    case 32: launch_kernel(prefill_kernel<32>); break;
    case 64: launch_kernel(prefill_kernel<64>); break;
    case 96: launch_kernel(prefill_kernel<96>); break;
    default: launch_kernel(prefill_kernel<128>); break;
  }
  check_launch("prefill_kernel");
}

int prefill_tile_rows() { return kTileRows; }

}  // namespace podkv::cuda
