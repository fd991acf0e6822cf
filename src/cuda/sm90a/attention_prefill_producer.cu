// Prefill attention on Hopper's warpgroup MMA with copying warps (FlashAttention-3's warp
// specialisation, with cp.async in place of TMA: the keys come from a paged cache, row by row).
//
// The block is attention_prefill_wgmma.cu's two warpgroups (each 4 query heads of one KV head on
// the 16 rows of one half of a tile-list entry) plus a third warpgroup that does every page-table
// lookup and copy (one warp was too few: 2.0x the lockstep kernel's time at 32K tokens). The
// third warpgroup gives its registers to the other two (setmaxnreg: 40 each for it, 232 for the
// computing threads, where a block of 384 threads would otherwise have 168 each and ptxas would
// serialise the wgmma). In the lockstep kernel every warp spent about a third of its instructions
// on lookups and copies and met the others at a block barrier per 64-key tile; here the
// warpgroups only compute, each at its own pace, and the tiles pass through kStages stages of
// shared memory guarded by two mbarriers per stage:
//   full[st]:  the copying warpgroup's 128 threads arrive when their copies of the tile have landed
//              (cp.async.mbarrier.arrive.noinc);
//   empty[st]: each of the 8 computing warps arrives when it is done with the tile (its O += P V
//              complete, seen at the next tile's wait).
// Tile j goes to stage j % kStages; the copying warps fill it once tile j - kStages is released.
// Every warp walks the same tiles (the block's, as in the lockstep kernel), so the phases match.
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/prefill_warp.cuh"
#include "cuda/sm90a/barriers.cuh"
#include "cuda/sm90a/prefill_producer.h"
#include "cuda/sm90a/wgmma_tile.cuh"

namespace podkv::cuda {

namespace {

using namespace prefill;
using namespace sm90a;

constexpr int kComputeWarps = 2 * kWarps;
constexpr int kProducerBlockThreads = (kComputeWarps + kWarps) * 32;

// Registers per thread from here on, for the whole warpgroup (setmaxnreg is warpgroup-wide): the
// copying warpgroup's 128 x 40 and the computing 256 x 232 fit the 65,536 of a multiprocessor.
template <int kRegisters>
__device__ __forceinline__ void raise_registers() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <int kRegisters>
__device__ __forceinline__ void lower_registers() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
constexpr int kProducerStages = 5;

// The copying warps: warp `part` (0-3) of the copying warpgroup takes rows 32 (part % 2) .. + 31 of
// the keys (part < 2) or the values of each tile. Lane l looks up row l's entry (the next tile's
// lookup in flight while this tile's copies are issued); then each copy instruction moves two
// whole rows, 16-byte chunk l % 16 of rows 2 i + l / 16, the row's address taken from the lane
// that looked it up, into the chunk's swizzled place.
template <int D, int kStages>
__device__ __forceinline__ void copy_tiles(const DeviceStep& s, const HeadSources& src, const KeySpan& span,
                                           uint8_t* smem, uint64_t* full, uint64_t* empty, int part, int lane) {
  using Tile = WgmmaTile<D>;
  const int passes = src.passes();
  const int kind = part / 2 == 0 ? podkv::kKeys : podkv::kValues, first_row = 32 * (part % 2);
  const DeviceStream own = src.stream(0, kind), distant = passes > 1 ? src.stream(1, kind) : DeviceStream{};
  auto lookup = [&](const TileCursor& c) -> EntryRef {
    const int32_t j = c.k0 + first_row + lane;
    // Field by field: a select of whole structs went through local memory.
    const DeviceStream st{c.pass == 0 ? own.pages : distant.pages, c.pass == 0 ? own.num_pages : distant.num_pages};
    return c.pass < passes && j <= span.last ? entry_ref(s, st, j) : EntryRef{};
  };
  const int chunk = lane % Tile::kChunks, half = lane / Tile::kChunks;
  const int kind_offset = (part / 2) * Tile::kKindBytes;
  TileCursor cur = next_tile(TileCursor{0, -kSmemTileKeys}, span, src.one_pass, passes, kSmemTileKeys);
  EntryRef e = lookup(cur);
  for (int j = 0; cur.pass < passes; ++j) {
    const int stage = j % kStages;
    const TileCursor next = next_tile<true>(cur, span, src.one_pass, passes, kSmemTileKeys);
    const EntryRef next_e = lookup(next);
    const uint8_t* row = entry_address(s, e);
    if (row == nullptr) row = zero_entry;
    if (j >= kStages) mbarrier_wait(&empty[stage], (j / kStages + 1) & 1);  // tile j - kStages released
    uint8_t* base = smem + stage * Tile::kStageBytes + kind_offset;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int r = 2 * i + half;
      const uint8_t* from = reinterpret_cast<const uint8_t*>(
          __shfl_sync(0xffffffffu, reinterpret_cast<uintptr_t>(row), r));
      cp_async16(base + Tile::offset(first_row + r, chunk), from + 16 * chunk, true);
    }
    cp_async_arrive(&full[stage]);
    cur = next, e = next_e;
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");  // no copy outlives the block
}

template <int D>
__global__ void __launch_bounds__(kProducerBlockThreads, 1)
    prefill_producer_kernel(DeviceStep s, AttentionLaunch a, const float* q, const int32_t* tiles, bool uniform) {
  static_assert(D == 128, "head_dim 128 only: see prefill_wgmma_fits");
  using Tile = WgmmaTile<D>;
  constexpr int kStages = kProducerStages;
  extern __shared__ uint8_t producer_smem_raw[];
  __shared__ uint64_t full[kStages], empty[kStages];
  uint8_t* smem = align_1024(producer_smem_raw);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);  // most keys first
  const RowTile block_rows = row_tile(s, tiles, tile, 0, 2);
  if (block_rows.rows <= 0) return;
  uint8_t* zero_values = smem + kStages * Tile::kStageBytes;  // a value tile of zeros
  for (int i = threadIdx.x; i < Tile::kKindBytes / 16; i += blockDim.x)
    reinterpret_cast<uint4*>(zero_values)[i] = make_uint4(0, 0, 0, 0);
  fence_proxy_async();  // the zeros, visible to the tensor cores after the barrier below
  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) mbarrier_init(&full[i], kWarps * 32), mbarrier_init(&empty[i], kComputeWarps);
    mbarrier_init_fence();
  }
  __syncthreads();
  const int head0 = blockIdx.y * kWarps;
  const KeySpan block_span(s, s.first_pos[block_rows.b] + (block_rows.row0 - s.row_begin[block_rows.b]), block_rows.rows);
  if (warp >= kComputeWarps) {
    lower_registers<40>();
    copy_tiles<D, kStages>(s, HeadSources(s, a, head0, block_rows.b), block_span, smem, full, empty,
                           warp - kComputeWarps, lane);
    return;
  }
  raise_registers<232>();

  // A computing warp: query head head0 + warp % 4 on the rows of its warpgroup.
  const RowTile rt = row_tile(s, tiles, tile, warp / kWarps, 1);
  PrefillWarp<D, true> pw(s, a, q, rt, head0 + warp % kWarps, lane);
  auto& w = pw.w;
  const int passes = pw.passes();
  TileCursor cur = next_tile(TileCursor{0, -kSmemTileKeys}, block_span, pw.one_pass, passes, kSmemTileKeys);
  // Iteration j issues S of tile j, then O += P V of tile j - 1 (so that S completes first: a
  // warpgroup's wgmma groups complete in order), and computes tile j's weights while the tensor
  // cores still add tile j - 1's values. Every tile is computed, also where this warpgroup's rows
  // read none of it (its weights are then all zero): a wgmma under a branch that ptxas cannot
  // prove warpgroup-uniform would be serialised.
  // Tile j - 1's probabilities (read by its P V until that completes); before tile 0, zeros times
  // the zero tile.
  uint32_t p[4][4] = {};
  auto previous_values = [&](int j) {
    return j > 0 ? smem + ((j - 1) % kStages) * Tile::kStageBytes + Tile::kKindBytes : zero_values;
  };
  int j = 0;
  for (; cur.pass < passes; ++j) {
    const int stage = j % kStages;
    uint8_t* tile_base = smem + stage * Tile::kStageBytes;
    mbarrier_wait(&full[stage], (j / kStages) & 1);
    fence_proxy_async();  // the landed copies, visible to the tensor cores
    float x[8][4];
    issue_scores<D>(x, w.qa[0], tile_base);
    issue_values<D>(w.o, p, previous_values(j));
    wgmma_commit();   // tile j - 1's P V
    wgmma_wait<1>();  // S
    fence_operands(x);
    float correction[2];
    pw.weights(x, cur.k0, cur.pass, uniform, correction);
    wgmma_wait<0>();  // tile j - 1's P V
    fence_operands(w.o);
    if (j > 0 && lane == 0) mbarrier_arrive(&empty[(j - 1) % kStages]);
    w.rescale(correction);
    pack_probabilities(x, p);
    cur = next_tile<true>(cur, block_span, pw.one_pass, passes, kSmemTileKeys);
  }
  issue_values<D>(w.o, p, previous_values(j));  // the last tile's P V
  wgmma_commit();
  wgmma_wait<0>();
  fence_operands(w.o);
  if (rt.rows > 0) pw.write();
}

}  // namespace

void prefill_producer(const DeviceStep& step, const AttentionLaunch& launch, const float* q, const int32_t* tiles,
                      int64_t num_tiles, bool uniform, cudaStream_t stream) {
  // The stages, the zero value tile, and room to align them.
  const int smem = kProducerStages * WgmmaTile<128>::kStageBytes + WgmmaTile<128>::kKindBytes + 1024;
  auto* kernel = prefill_producer_kernel<128>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "cudaFuncSetAttribute(prefill_producer_kernel)");
  const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(launch.num_heads / kWarps));
  kernel<<<grid, kProducerBlockThreads, smem, stream>>>(step, launch, q, tiles, uniform);
  check_launch("prefill_producer_kernel");
}

}  // namespace podkv::cuda
