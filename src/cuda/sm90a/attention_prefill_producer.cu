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
// warpgroups only compute, each at its own pace, one step of kStepKeys keys at a time:
//   64 keys:  S[64 x 64] = Q Kᵀ (D/16 wgmma m64n64k16, Q from registers), O += P V (4 wgmma
//             m64n128k16); 5 stages of one tile, and a zero value tile for the first P V;
//   128 keys: S[64 x 128] (D/16 wgmma m64n128k16, Q and K from shared memory), O += P V (8 wgmma);
//             3 stages of two tiles (PODKV_CUDA_PREFILL_STEP=128, an experiment: the step's work
//             that does not grow with its keys, the wait, the proxy fence, the row maxima and O's
//             rescale, is paid half as often).
// The stages of shared memory are guarded by two mbarriers each:
//   full[st]:  the copying warpgroup's 128 threads arrive when their copies of a 64-key tile have
//              landed (cp.async.mbarrier.arrive.noinc; two tiles per stage for 128-key steps);
//   empty[st]: each of the 8 computing warps arrives when it is done with the stage (its O += P V
//              complete, seen at the next step's wait).
// Step i goes to stage i % kStages; the copying warps fill it once step i - kStages is released.
// The tile cursor walks 64-key tiles (the masks' classes and the passes are per 64 keys), and
// every warp walks the same tiles (the block's, as in the lockstep kernel), so the phases match.
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

// A step's shape: its stages of shared memory, and what follows them (64 keys: a zero value tile;
// 128 keys: the two warpgroups' Q).
template <int D, int kStepKeys>
struct Step {
  static_assert(kStepKeys == 64 || kStepKeys == 128, "steps of 64 or 128 keys");
  using Tile = WgmmaTile<D, kStepKeys>;
  static constexpr int kTiles = kStepKeys / kSmemTileKeys;  // 64-key tiles per stage
  static constexpr int kStages = kStepKeys == 64 ? 5 : 3;
  static constexpr int kExtraBytes = kStepKeys == 64 ? Tile::kKindBytes : 2 * WgmmaTile<D, 64>::kKindBytes;
  // With room to align the stages: 177 KB (64 keys) or 225 KB (128) of the 227 a block may have.
  static constexpr int kSmemBytes = kStages * Tile::kStageBytes + kExtraBytes + 1024;
};

// The copying warps: warp `part` (0-3) of the copying warpgroup takes rows 32 (part % 2) .. + 31 of
// the keys (part < 2) or the values of each 64-key tile, into its place in its step's stage. Each
// copy instruction moves two whole rows, 16-byte chunk l % 16 of rows 2 i + l / 16 for lane l, into
// the chunk's swizzled place. Where the row entries come from:
//   kWholePages (pages of a multiple of 64 tokens, entries of D bf16 values: a tile's rows are
//   consecutive entries of one page): the tile's page looked up once (by every lane, a tile ahead),
//   row r at r entries on (session 23: the per-row lookups made the copying warps the bound);
//   else lane l looks up row l's entry (a tile ahead) and each copy takes the row's address from the
//   lane that looked it up.
// Rows past the span's last key or without a page copy zeros.
template <int D, int kStepKeys, bool kWholePages>
__device__ __forceinline__ void copy_tiles(const DeviceStep& s, const HeadSources& src, const KeySpan& span,
                                           uint8_t* smem, uint64_t* full, uint64_t* empty, int part, int lane) {
  using S = Step<D, kStepKeys>;
  using Tile = typename S::Tile;
  const int passes = src.passes();
  const int kind = part / 2 == 0 ? podkv::kKeys : podkv::kValues, first_row = 32 * (part % 2);
  const DeviceStream own = src.stream(0, kind), distant = passes > 1 ? src.stream(1, kind) : DeviceStream{};
  auto lookup = [&](const TileCursor& c) -> EntryRef {
    const int32_t j = c.k0 + (kWholePages ? 0 : first_row + lane);
    // Field by field: a select of whole structs went through local memory.
    const DeviceStream st{c.pass == 0 ? own.pages : distant.pages, c.pass == 0 ? own.num_pages : distant.num_pages};
    return c.pass < passes && j <= span.last ? entry_ref(s, st, j) : EntryRef{};
  };
  const int chunk = lane % Tile::kChunks, half = lane / Tile::kChunks;
  const int kind_offset = (part / 2) * Tile::kKindBytes;
  // Tile j is tile j % kTiles of step j / kTiles. Past the last tile (a last step's second) the
  // cursor is past the passes, where lookup gives no entry: zero rows.
  const TileWalk walk(span, src.one_pass, passes, kSmemTileKeys);
  auto tile = [&](int j) { return j < walk.count ? walk.at(j) : TileCursor{passes, 0}; };
  const int tiles = (walk.count + S::kTiles - 1) / S::kTiles * S::kTiles;
  TileCursor cur = tile(0);
  EntryRef e = lookup(cur);
  for (int j = 0; j < tiles; ++j) {
    const int step = j / S::kTiles, stage = step % S::kStages;
    const TileCursor next = tile(j + 1);
    const EntryRef next_e = lookup(next);
    const uint8_t* row = entry_address(s, e);
    // kWholePages: this lane's chunk of its first row, and how many of its 16 rows (2 i + half) have
    // entries (the others copy zeros).
    const int left = row == nullptr ? 0 : span.last - cur.k0 + 1 - first_row - half;
    if (row == nullptr) row = zero_entry;
    const uint8_t* first = row + (first_row + half) * Tile::kRowBytes + 16 * chunk;
    const uint8_t* zeros = zero_entry + 16 * chunk;
    if (j % S::kTiles == 0 && step >= S::kStages)
      mbarrier_wait(&empty[stage], (step / S::kStages + 1) & 1);  // step - kStages released
    uint8_t* base = smem + stage * Tile::kStageBytes + kind_offset;
    const int row0 = (j % S::kTiles) * kSmemTileKeys + first_row;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int r = 2 * i + half;
      const uint8_t* from;
      if constexpr (kWholePages)
        from = 2 * i < left ? first + 2 * i * Tile::kRowBytes : zeros;
      else
        from = reinterpret_cast<const uint8_t*>(__shfl_sync(0xffffffffu, reinterpret_cast<uintptr_t>(row), r)) +
               16 * chunk;
      cp_async16(base + Tile::offset(row0 + r, chunk), from, true);
    }
    cp_async_arrive(&full[stage]);
    cur = next, e = next_e;
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");  // no copy outlives the block
}

// 64-key steps. Iteration j issues S of tile j, then O += P V of tile j - 1 (so that S completes
// first: a warpgroup's wgmma groups complete in order), and computes tile j's weights while the
// tensor cores still add tile j - 1's values. Every tile is computed, also where this warpgroup's
// rows read none of it (its weights are then all zero): a wgmma under a branch that ptxas cannot
// prove warpgroup-uniform would be serialised.
// The loop runs a trip count taken once (TileWalk::count, through redux.sync, whose result ptxas
// knows is warp-uniform) and takes tile j's place from TileWalk::at, not from walking the cursor
// until it is past its passes. A loop whose exit ptxas cannot prove uniform keeps its body off the
// uniform datapath: each wgmma descriptor was built in vector registers and moved over (R2UR, two
// per wgmma) in every tile (session 34's SASS; the cursor's loop was 0.98x at 32K).
template <int D>
__device__ __forceinline__ void compute_steps_64(PrefillWarp<D, true>& pw, const KeySpan& block_span, uint8_t* smem,
                                                 uint64_t* full, uint64_t* empty, int lane, bool uniform) {
  using S = Step<D, 64>;
  using Tile = typename S::Tile;
  constexpr int kStages = S::kStages;
  auto& w = pw.w;
  const int passes = pw.passes();
  const uint8_t* zero_values = smem + kStages * Tile::kStageBytes;  // written by the kernel
  // Tile j - 1's probabilities (read by its P V until that completes); before tile 0, zeros times
  // the zero tile.
  uint32_t p[4][4] = {};
  // The wgmma descriptors computed once, each tile's a stage's bytes on, and the stage and its phase
  // as running counters (as the 128-key loop does): per tile, a 32-bit add instead of a descriptor
  // built from the address and a division by kStages for the stage and the parity.
  const uint64_t keys0 = smem_descriptor(smem, 16, 1024), values0 = values_descriptor<D, 64>(smem + Tile::kKindBytes);
  uint64_t previous_values = values_descriptor<D, 64>(zero_values);  // tile j - 1's value tile
  int stage = 0, previous_stage = 0;
  uint32_t phase = 0;
  const TileWalk walk(block_span, pw.one_pass, passes, kSmemTileKeys);
  const int tiles = __reduce_max_sync(0xffffffffu, walk.count);
  const uint32_t full0 = smem_address(full), empty0 = smem_address(empty);  // 8 bytes a stage
  for (int j = 0; j < tiles; ++j) {
    const TileCursor cur = walk.at(j);
    const uint32_t stage_bytes = stage * Tile::kStageBytes;
    mbarrier_wait(full0 + 8 * stage, phase);
    fence_proxy_async();  // the landed copies, visible to the tensor cores
    float x[8][4];
    issue_scores<D>(x, w.qa[0], offset_descriptor(keys0, stage_bytes));
    issue_values<D>(w.o, p, previous_values);
    wgmma_commit();   // tile j - 1's P V
    wgmma_wait<1>();  // S
    fence_operands(x);
    float correction[2];
    pw.weights(x, cur.k0, cur.pass, uniform, correction);
    wgmma_wait<0>();  // tile j - 1's P V
    fence_operands(w.o);
    if (j > 0 && lane == 0) mbarrier_arrive(empty0 + 8 * previous_stage);
    w.rescale(correction);
    pack_probabilities(x, p);
    previous_values = offset_descriptor(values0, stage_bytes), previous_stage = stage;
    if (++stage == kStages) stage = 0, phase ^= 1;
  }
  issue_values<D>(w.o, p, previous_values);  // the last tile's P V
  wgmma_commit();
  wgmma_wait<0>();
  fence_operands(w.o);
}

// A warp's Q fragments (rows g, g + 8 of its 16; A layout in head order) into its rows of the
// warpgroup's Q tile (64 rows: 16 per warp), the tile's swizzled layout.
template <int D>
__device__ __forceinline__ void store_q(const WarpAttention<D, false>& w, uint8_t* q_tile, int warp_in_group) {
  using Q = WgmmaTile<D, 64>;
#pragma unroll
  for (int st = 0; st < D / 16; ++st)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = 16 * warp_in_group + w.g + 8 * (i % 2), chunk = 2 * st + i / 2;
      *reinterpret_cast<uint32_t*>(q_tile + Q::offset(row, chunk) + 4 * w.c) = w.qa[0][st][i];
    }
}

// 128-key steps, the same order: step i's S (Q from shared memory), step i - 1's P V, step i's
// weights meanwhile. Before the first step: zero probabilities times the first stage's values
// (landed, finite: entries or zero rows; a block always has a first tile, the one holding its last
// row's own key). A last step of one tile has the copying warps' zero rows
// as its second; its masks remove them (the cursor just past the last tile: keys no row reads).
template <int D>
__device__ __forceinline__ void compute_steps_128(PrefillWarp<D, true>& pw, const KeySpan& block_span, uint8_t* smem,
                                                  uint64_t* full, uint64_t* empty, int lane, int group, bool uniform) {
  using S = Step<D, 128>;
  using Tile = typename S::Tile;
  constexpr int kStages = S::kStages;
  auto& w = pw.w;
  uint8_t* q_tile = smem + kStages * Tile::kStageBytes + group * WgmmaTile<D, 64>::kKindBytes;
  store_q<D>(w, q_tile, pw.i % kWarps);
  fence_proxy_async();                                     // Q, visible to the tensor cores
  named_barrier_sync(1 + group, kWarps * 32);              // the warpgroup's 64 rows
  const int passes = pw.passes();
  TileCursor cur = next_tile(TileCursor{0, -kSmemTileKeys}, block_span, pw.one_pass, passes, kSmemTileKeys);
  uint32_t p[8][4] = {};
  // The wgmma descriptors: computed once, each step's a stage's bytes on. The SASS still builds each
  // of the 24 in vector registers and moves it over (R2UR) per step, since the loop's control, from
  // the tile cursor, is not provably warp-uniform to ptxas (session 24; a shuffle of the offset from
  // lane 0 did not change that and is gone). Cheaper than recomputing them all the same: 0.98x ->
  // 0.995x the 64-key kernel.
  const uint64_t q_desc = smem_descriptor(q_tile, 16, 1024), keys0 = smem_descriptor(smem, 16, 1024);
  const uint64_t values0 = values_descriptor<D, 128>(smem + Tile::kKindBytes);
  uint32_t stage_bytes = 0, previous_bytes = 0;  // step i's stage and step i - 1's, in bytes
  int stage = 0;
  uint32_t phase = 0;
  for (int i = 0; cur.pass < passes; ++i) {
    const TileCursor next = next_tile<true>(cur, block_span, pw.one_pass, passes, kSmemTileKeys);
    const bool has_next = next.pass < passes;
    const TileCursor second = has_next ? next : TileCursor{cur.pass, cur.k0 + kSmemTileKeys};
    stage_bytes = stage * Tile::kStageBytes;
    mbarrier_wait(&full[stage], phase);
    fence_proxy_async();  // the landed copies, visible to the tensor cores
    float x[16][4];
    issue_scores_128<D>(x, q_desc, offset_descriptor(keys0, stage_bytes));
    issue_values<D>(w.o, p, offset_descriptor(values0, previous_bytes));
    wgmma_commit();   // step i - 1's P V
    wgmma_wait<1>();  // S
    fence_operands(x);
    float correction[2];
    pw.weights(x, cur, second, uniform, correction);
    wgmma_wait<0>();  // step i - 1's P V
    fence_operands(w.o);
    if (i > 0 && lane == 0) mbarrier_arrive(&empty[stage == 0 ? kStages - 1 : stage - 1]);
    w.rescale(correction);
    pack_probabilities(x, p);
    previous_bytes = stage_bytes;
    cur = next_tile<true>(next, block_span, pw.one_pass, passes, kSmemTileKeys);
    if (++stage == kStages) stage = 0, phase ^= 1;
  }
  issue_values<D>(w.o, p, offset_descriptor(values0, previous_bytes));  // the last step's P V
  wgmma_commit();
  wgmma_wait<0>();
  fence_operands(w.o);
}

template <int D, int kStepKeys>
__global__ void __launch_bounds__(kProducerBlockThreads, 1)
    prefill_producer_kernel(DeviceStep s, AttentionLaunch a, const float* q, const int32_t* tiles, bool uniform) {
  static_assert(D == 128, "head_dim 128 only: see prefill_wgmma_fits");
  using S = Step<D, kStepKeys>;
  using Tile = typename S::Tile;
  extern __shared__ uint8_t producer_smem_raw[];
  __shared__ uint64_t full[S::kStages], empty[S::kStages];
  uint8_t* smem = align_1024(producer_smem_raw);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);  // most keys first
  const RowTile block_rows = row_tile(s, tiles, tile, 0, 2);
  if (block_rows.rows <= 0) return;
  if constexpr (kStepKeys == 64) {
    uint8_t* zero_values = smem + S::kStages * Tile::kStageBytes;  // a value tile of zeros
    for (int i = threadIdx.x; i < Tile::kKindBytes / 16; i += blockDim.x)
      reinterpret_cast<uint4*>(zero_values)[i] = make_uint4(0, 0, 0, 0);
    fence_proxy_async();  // the zeros, visible to the tensor cores after the barrier below
  }
  if (threadIdx.x == 0) {
    for (int i = 0; i < S::kStages; ++i)
      mbarrier_init(&full[i], S::kTiles * kWarps * 32), mbarrier_init(&empty[i], kComputeWarps);
    mbarrier_init_fence();
  }
  __syncthreads();
  const int head0 = blockIdx.y * kWarps;
  const KeySpan block_span(s, s.first_pos[block_rows.b] + (block_rows.row0 - s.row_begin[block_rows.b]), block_rows.rows);
  if (warp >= kComputeWarps) {
    lower_registers<40>();
    // Whole pages for the 128-key steps only: they made the 64-key kernel no faster (its computing
    // warps are its bound; session 23), and its copying warps would spill with both copy loops.
    const HeadSources src(s, a, head0, block_rows.b);
    if (kStepKeys == 128 && s.page_tokens % kSmemTileKeys == 0 && s.entry_bytes == WgmmaTile<D>::kRowBytes)
      copy_tiles<D, kStepKeys, kStepKeys == 128>(s, src, block_span, smem, full, empty, warp - kComputeWarps, lane);
    else
      copy_tiles<D, kStepKeys, false>(s, src, block_span, smem, full, empty, warp - kComputeWarps, lane);
    return;
  }
  raise_registers<232>();

  // A computing warp: query head head0 + warp % 4 on the rows of its warpgroup.
  const int group = warp / kWarps;
  const RowTile rt = row_tile(s, tiles, tile, group, 1);
  PrefillWarp<D, true> pw(s, a, q, rt, head0 + warp % kWarps, lane);
  if constexpr (kStepKeys == 64) compute_steps_64<D>(pw, block_span, smem, full, empty, lane, uniform);
  else compute_steps_128<D>(pw, block_span, smem, full, empty, lane, group, uniform);
  if (rt.rows > 0) pw.write();
}

template <int kStepKeys>
void launch_producer(const DeviceStep& step, const AttentionLaunch& launch, const float* q, const int32_t* tiles,
                     int64_t num_tiles, bool uniform, cudaStream_t stream) {
  constexpr int smem = Step<128, kStepKeys>::kSmemBytes;
  auto* kernel = prefill_producer_kernel<128, kStepKeys>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "cudaFuncSetAttribute(prefill_producer_kernel)");
  const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(launch.num_heads / kWarps));
  kernel<<<grid, kProducerBlockThreads, smem, stream>>>(step, launch, q, tiles, uniform);
  check_launch("prefill_producer_kernel");
}

}  // namespace

void prefill_producer(const DeviceStep& step, const AttentionLaunch& launch, const float* q, const int32_t* tiles,
                      int64_t num_tiles, bool uniform, int step_keys, cudaStream_t stream) {
  if (step_keys == 128) launch_producer<128>(step, launch, q, tiles, num_tiles, uniform, stream);
  else launch_producer<64>(step, launch, q, tiles, num_tiles, uniform, stream);
}

}  // namespace podkv::cuda
