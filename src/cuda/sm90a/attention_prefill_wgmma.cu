// Prefill attention on Hopper's warpgroup MMA (wgmma; this file is compiled for sm_90a alone and
// runs where the device is compute capability 9.0): the block-shared kernel of
// attention_prefill.cu with its products moved from mma.sync to wgmma.
//
// A block is 8 warps: two warpgroups, each 4 query heads (one per warp) of the same KV head on
// the 16 rows of one half of a tile-list entry (PODKV_CUDA_PREFILL=1,U: one warpgroup per block,
// 0.93x at 32K tokens on the H200). For the wgmma a warpgroup's 64 "rows" are those
// 4 heads x 16 positions: warp w's A fragments are its head's Q. Per 64-key tile, copied once per
// block into shared memory (cp.async, two tiles ahead, 3 or 4 stages, 128-byte swizzle; the layout
// and the two products are wgmma_tile.cuh's), the warps meet at a block barrier, then
//   S = Q Kᵀ, masks and the online softmax per warp (PrefillWarp::weights, as the mma.sync
//   kernels), O += P V.
// The accumulators' layout per warp is mma.sync's, so masks, softmax and gates are shared code;
// only Q's fragments and O's columns are in head order here (PrefillWarp<D, true>).
// Two warpgroups per block go to attention_prefill_producer.cu's kernel (the same products, with a
// copying warpgroup and no block barrier) unless PODKV_CUDA_PREFILL_PRODUCER=0.
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/prefill_warp.cuh"
#include "cuda/sm90a/prefill_producer.h"
#include "cuda/sm90a/wgmma_tile.cuh"

namespace podkv::cuda {

namespace {

using namespace prefill;
using namespace sm90a;

// Stages of shared memory: four with two warpgroups per block (one block per SM), so that a tile's
// O += P V can still run while the next tiles are copied (its wait is deferred to the next tile's
// S = Q Kᵀ); three with one warpgroup per block (two blocks per SM), which waits for it at once.
template <int kGroups>
constexpr int kWgmmaStages = kGroups == 2 ? 4 : 3;

template <int D, int kGroups>
__global__ void __launch_bounds__(kGroups * kWarps * 32, 2 / kGroups)
    prefill_wgmma_kernel(DeviceStep s, AttentionLaunch a, const float* q, const int32_t* tiles, bool uniform) {
  static_assert(D == 128, "head_dim 128 only: see prefill_wgmma_fits");
  using Tile = WgmmaTile<D>;
  constexpr int kStages = kWgmmaStages<kGroups>;
  constexpr bool kDeferPv = kStages == 4;
  constexpr int kThreads = kGroups * kWarps * 32, kChunks = Tile::kChunks;
  extern __shared__ uint8_t wgmma_smem_raw[];
  __shared__ const uint8_t* row_ptr[2][2 * kSmemTileKeys];  // two tiles' key and value entries
  uint8_t* smem = align_1024(wgmma_smem_raw);
  auto kind_tile = [&](int stage, int kind) { return smem + (stage * 2 + kind) * Tile::kKindBytes; };

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int idx = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);  // most keys first
  const int tile = kGroups == 2 ? idx : idx / 2, first = kGroups == 2 ? 0 : idx % 2;
  const RowTile block_rows = row_tile(s, tiles, tile, first, kGroups);
  if (block_rows.rows <= 0) return;
  // This warp: query head 4y + warp % 4, the rows of its warpgroup (the same for its 4 warps).
  const RowTile rt = row_tile(s, tiles, tile, first + warp / kWarps, 1);
  PrefillWarp<D, true> pw(s, a, q, rt, blockIdx.y * kWarps + warp % kWarps, lane);
  auto& w = pw.w;
  const KeySpan block_span(s, s.first_pos[rt.b] + (block_rows.row0 - s.row_begin[rt.b]), block_rows.rows);
  const int32_t last = block_span.last;
  const int passes = pw.passes();
  using Cursor = TileCursor;
  // The pipeline looks three tiles ahead, past the last one too (where the cursor stays).
  auto advance = [&](Cursor c) { return next_tile<true>(c, block_span, pw.one_pass, passes, kSmemTileKeys); };
  // Thread t < 128 looks up row t % 64 of the keys (t < 64) or the values of each tile: its two
  // streams (one per pass) once, here.
  const int lookup_kind = threadIdx.x < kSmemTileKeys ? podkv::kKeys : podkv::kValues;
  DeviceStream own_stream, distant_stream;  // passes 0 and 1
  if (threadIdx.x < 2 * kSmemTileKeys) {
    own_stream = pw.stream(0, lookup_kind);
    if (passes > 1) distant_stream = pw.stream(1, lookup_kind);
  }
  // The entry of this thread's row of tile c (none past `last`, where no page holds it, or when there
  // is no tile c): the page-table read now, the address (entry_address) when it is stored.
  auto entry_of = [&](const Cursor& c) -> EntryRef {
    const int t = threadIdx.x;
    const int32_t j = c.k0 + t % kSmemTileKeys;
    if (t >= 2 * kSmemTileKeys || c.pass >= passes || j > last) return EntryRef{};
    DeviceStream st;
    st.pages = c.pass == 0 ? own_stream.pages : distant_stream.pages;
    st.num_pages = c.pass == 0 ? own_stream.num_pages : distant_stream.num_pages;
    return entry_ref(s, st, j);
  };
  // What row_ptr holds for an entry: its address, or zero_entry where there is none.
  auto row_source = [&](const EntryRef& e) -> const uint8_t* {
    const uint8_t* p = entry_address(s, e);
    return p != nullptr ? p : zero_entry;
  };
  // Queues the copy of the tile whose entries are in row_ptr[slot] into `stage` (every thread).
  // Thread t copies chunk t % kChunks of rows t / kChunks + i kRowsPerPass: its swizzled column
  // is the same in every pass (kRowsPerPass is a multiple of 8), the rest is a constant offset.
  // The row addresses are all read before the first copy (one shared-memory latency, not eight).
  constexpr int kRowsPerPass = kThreads / kChunks, kPasses = 2 * kSmemTileKeys / kRowsPerPass;
  static_assert(kRowsPerPass % 8 == 0 && kSmemTileKeys % kRowsPerPass == 0, "passes of whole swizzle atoms");
  const int chunk = threadIdx.x % kChunks, row0 = threadIdx.x / kChunks;
  const int chunk_offset = Tile::offset(row0, chunk);
  auto copy_tile = [&](int slot, int stage) {
    uint8_t* base = kind_tile(stage, 0) + chunk_offset;
    const uint8_t* src[kPasses];
#pragma unroll
    for (int i = 0; i < kPasses; ++i) src[i] = row_ptr[slot][row0 + i * kRowsPerPass];
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int row = i * kRowsPerPass;  // + row0: keys (rows < 64), then values
      cp_async16(base + (row / kSmemTileKeys) * Tile::kKindBytes + (row % kSmemTileKeys) * 128, src[i] + 16 * chunk, true);
    }
    cp_async_commit();  // a group per tile, empty past the last: the waits below count tiles
  };

  // A pipeline of kStages stages: while tile j is multiplied, tiles j + 1 and j + 2 are being copied
  // and tile j + 3's entries looked up, so one barrier per tile suffices and neither the page-table
  // reads nor the copies wait on the tensor cores.
  Cursor cur = advance(Cursor{0, -kSmemTileKeys});
  Cursor ahead[3] = {advance(cur), {}, {}};  // tiles j + 1, j + 2, j + 3
  ahead[1] = advance(ahead[0]);
  ahead[2] = advance(ahead[1]);
  if (threadIdx.x < 2 * kSmemTileKeys) row_ptr[0][threadIdx.x] = row_source(entry_of(cur));
  if (threadIdx.x < 2 * kSmemTileKeys) row_ptr[1][threadIdx.x] = row_source(entry_of(ahead[0]));
  __syncthreads();
  copy_tile(0, 0);
  copy_tile(1, 1);
  __syncthreads();  // both slots read: they take tiles j + 2 and j + 3 next
  if (threadIdx.x < 2 * kSmemTileKeys) row_ptr[0][threadIdx.x] = row_source(entry_of(ahead[1]));
  int stage = 0, slot = 0;  // tile j's stage; row_ptr[slot]: tile j + 2's entries
  for (int j = 0; cur.pass < passes; ++j) {
    cp_async_wait<1>();   // this thread's copies of tile j have landed
    fence_proxy_async();  // visible to the tensor cores
    // Everyone's: tile j complete, tile j + 2's entries written, and the stage tile j + 2 goes to
    // free (tile j - 1's with three stages; with four, tile j - 2's, whose P V every warpgroup saw
    // complete at tile j - 1's wait).
    __syncthreads();
    copy_tile(slot, (stage + 2) % kStages);
    const EntryRef next_entry = entry_of(ahead[2]);  // in flight during the products
    // The same for the warpgroup's 4 warps (same rows, same KV head), as wgmma needs.
    if (rt.rows > 0 && pw.needed(cur.pass, cur.k0, kSmemTileKeys)) {
      float x[8][4];
      issue_scores<D>(x, w.qa[0], kind_tile(stage, 0));
      wgmma_wait<0>();  // S, and the previous tile's P V before it
      fence_operands(x);
      fence_operands(w.o);
      pw.weights(x, cur.k0, cur.pass, uniform);
      uint32_t p[4][4];
      pack_probabilities(x, p);
      issue_values<D>(w.o, p, kind_tile(stage, 1));
      wgmma_commit();
      if constexpr (!kDeferPv) wgmma_wait<0>();
      fence_operands(w.o);
    } else if constexpr (kDeferPv) {
      wgmma_wait<0>();  // the previous tile's P V, before the next barrier frees its stage
      fence_operands(w.o);
    }
    if (threadIdx.x < 2 * kSmemTileKeys) row_ptr[slot ^ 1][threadIdx.x] = row_source(next_entry);  // read at tile j + 1
    cur = ahead[0], ahead[0] = ahead[1], ahead[1] = ahead[2], ahead[2] = advance(ahead[2]);
    stage = (stage + 1) % kStages, slot ^= 1;
  }
  wgmma_wait<0>();      // the last P V
  fence_operands(w.o);
  cp_async_wait<0>();   // the copies past the last tile (zeros) end before the block does
  if (rt.rows > 0) pw.write();
}

template <int D, int kGroups>
void launch_wgmma(int64_t num_tiles, int head_blocks, cudaStream_t stream, const DeviceStep& step,
                  const AttentionLaunch& launch, const float* q, const int32_t* tiles, bool uniform) {
  const int smem = kWgmmaStages<kGroups> * WgmmaTile<D>::kStageBytes + 1024;  // the stages, and room to align them
  auto* kernel = prefill_wgmma_kernel<D, kGroups>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "cudaFuncSetAttribute(prefill_wgmma_kernel)");
  // One warpgroup per block: two blocks per multiprocessor, which needs the largest shared-memory carveout.
  if (kGroups == 1)
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100),
               "cudaFuncSetAttribute(prefill_wgmma_kernel carveout)");
  const dim3 grid(static_cast<unsigned>(num_tiles * (2 / kGroups)), static_cast<unsigned>(head_blocks));
  kernel<<<grid, kGroups * kWarps * 32, smem, stream>>>(step, launch, q, tiles, uniform);
  check_launch("prefill_wgmma_kernel");
}

}  // namespace

bool prefill_wgmma_fits(int head_dim, int query_heads_per_kv_head) {
  static const bool hopper = [] {
    int device = 0, major = 0, minor = 0;
    return cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
           cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess &&
           major == 9 && minor == 0;
  }();
  // head_dim 64 is not taken: its outputs were wrong on the H200 (the op tests, session 17) although
  // its tile layouts and products alone were right (a separate test of the same wgmma calls); the
  // mma.sync kernel does it.
  return hopper && head_dim == 128 && query_heads_per_kv_head % kWarps == 0;
}

void prefill_wgmma(const DeviceStep& step, const AttentionLaunch& launch, const float* q, const int32_t* tiles,
                   int64_t num_tiles, const WgmmaPrefill& how, cudaStream_t stream) {
  check(prefill_wgmma_fits(step.head_dim, launch.num_heads / step.num_kv_heads),
        "cuda prefill attention (wgmma): needs a compute capability 9.0 GPU, head_dim 128 and 4 | query heads per KV head");
  const int head_blocks = launch.num_heads / kWarps;
  if (how.groups == 2 && how.producer)
    prefill_producer(step, launch, q, tiles, num_tiles, how.uniform, how.step_keys, stream);
  else if (how.groups == 2) launch_wgmma<128, 2>(num_tiles, head_blocks, stream, step, launch, q, tiles, how.uniform);
  else launch_wgmma<128, 1>(num_tiles, head_blocks, stream, step, launch, q, tiles, how.uniform);
}

}  // namespace podkv::cuda
