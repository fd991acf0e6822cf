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
//  - decode_mma_kernel (here; bf16 entries, no selection stores, head_dim a multiple of 32): one
//    warp per chunk, on the tensor cores (warp_attention.cuh), the KV head's query heads as the
//    mma's 16 rows, each lane's chunks of keys and values copied ahead into shared memory
//    (decode_tiles.cuh), Q and P split into bf16 hi + lo;
//  - decode_kernel (attention_decode_simt.cu; every other entry type and shape, on the CUDA cores).
// The merge is attention_decode_merge.cu's.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "cuda/attention_decode.cuh"
#include "cuda/cuda_check.h"
#include "cuda/decode_tiles.cuh"
#include "cuda/kernels.h"
#include "cuda/pdl.cuh"
#include "cuda/prefill_warp.cuh"
#include "cuda/warp_attention.cuh"

namespace podkv::cuda {

namespace {

using namespace decode;

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

// Bulk copies and mbarriers exist from sm_90 on: code compiled for an earlier target (a build for
// sm_80 that the driver compiles for a Hopper GPU from its PTX) takes the cp.async ring instead.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
constexpr bool kDeviceHasBulkCopies = false;
#else
constexpr bool kDeviceHasBulkCopies = true;
#endif

// How decode_mma_kernel brings a tile in, PODKV_CUDA_DECODE_COPY: "runs" (the default on compute
// capability 9.0 and later where a block may have the shared memory the largest head_dim's stages
// take: one bulk copy of the tile's keys and one of its values per page they lie in, bulk_tiles),
// "bulk" (one bulk copy of an entry per lane and tile), "tile" (16-byte cp.async per lane, the tile's
// pages looked up once) or "lane" (each lane looks its own entries up, as with pages under 16
// tokens). Pages under 16 tokens always take "lane"; stages 0 (loads into registers) take "tile" or
// "lane".
enum class DecodeCopy { kRuns, kBulk, kTile, kLane };

template <int D, int S, DecodeCopy kCopy>
__global__ void __launch_bounds__(kWarps * 32)
    decode_mma_kernel(DeviceStep s, AttentionLaunch a, const float* q, int splits, float* partials) {
  using W = WarpAttention<D, true>;
  using Slots = DecodeSlots<D>;
  constexpr bool kSmallPages = kCopy == DecodeCopy::kLane;
  constexpr bool kBulk = kCopy == DecodeCopy::kRuns || kCopy == DecodeCopy::kBulk;
  static_assert(S > 0 || !kBulk, "bulk copies go through the ring's stages");
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
    for (int nb = 0; nb < 2; ++nb) w.scores(k[nb], x[nb]);
    // Most tiles are whole and skip none of their keys: no mask then (keys and the class are the
    // warp's, skip[] this lane's two rows).
    if (keys < 16 || (tile_distant && (skip[0] || skip[1]))) {
#pragma unroll
      for (int nb = 0; nb < 2; ++nb)
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
    bulk_tiles<D, S, kCopy == DecodeCopy::kRuns>(s, spans, count, v0, v1, w, warp, lane, compute);
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
    // Accumulators o[8h .. 8h + 7][e] are elements 8 (2c + e % 2 + 8h) + 0 .. 7 (out_element): two float4.
#pragma unroll
    for (int h = 0; h < W::kValueHalves; ++h)
#pragma unroll
      for (int e = 2 * r; e < 2 * r + 2; ++e) {
        const int d = w.out_element(8 * h, e);
        if (d >= D) continue;
        float4* to = reinterpret_cast<float4*>(out + kPartialHead + d);
        to[0] = make_float4(w.o[8 * h][e], w.o[8 * h + 1][e], w.o[8 * h + 2][e], w.o[8 * h + 3][e]);
        to[1] = make_float4(w.o[8 * h + 4][e], w.o[8 * h + 5][e], w.o[8 * h + 6][e], w.o[8 * h + 7][e]);
      }
  }
  pdl_launch_dependents();  // the merge's blocks may start (after this kernel's, not beside them)
}

// The stages of decode_mma_kernel's shared-memory ring: PODKV_CUDA_DECODE_STAGES = 0 (loads into
// registers) or 2..4; 2 by default. Two stages leave room for two blocks of the head_dim-128 kernel
// per multiprocessor (three took 114 KB a block, one block), so a long row gets twice the splits:
// session 39, an H100, batch-1 decode at 32K 1.011x three stages, at 4K 1.00x.
int decode_stages() {
  static const int stages = [] {
    const char* e = std::getenv("PODKV_CUDA_DECODE_STAGES");
    const long v = e != nullptr ? std::strtol(e, nullptr, 10) : 2;
    return v == 0 || (v >= 2 && v <= 4) ? static_cast<int>(v) : 2;
  }();
  return stages;
}

// f(kernel, dynamic shared bytes) with the decode_mma_kernel of head_dim (32, 64, 96 or 128), the
// configured stages and copy, its shared-memory limit raised to what it takes.
template <int D, DecodeCopy kCopy, typename F>
void with_decode_mma_stages(F&& f) {
  constexpr bool kBulk = kCopy == DecodeCopy::kRuns || kCopy == DecodeCopy::kBulk;
  auto run = [&](auto kernel, int stages) {
    // The larger of the two layouts where bulk copies are asked for: code compiled for a target
    // before sm_90 takes the ring (DecodeSlots) in the same kernel.
    const size_t stage_bytes =
        kBulk && stages > 0
            ? std::max<size_t>(BulkStage<D, kCopy == DecodeCopy::kRuns>::kBytes, DecodeSlots<D>::kStageBytes)
            : DecodeSlots<D>::kStageBytes;
    const size_t smem = static_cast<size_t>(kWarps) * stages * stage_bytes;
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "cudaFuncSetAttribute(decode_mma_kernel)");
    f(kernel, smem);
  };
  constexpr DecodeCopy kNoRing = kCopy == DecodeCopy::kLane ? DecodeCopy::kLane : DecodeCopy::kTile;
  switch (decode_stages()) {
    case 0: run(decode_mma_kernel<D, 0, kNoRing>, 0); break;
    case 3: run(decode_mma_kernel<D, 3, kCopy>, 3); break;
    case 4: run(decode_mma_kernel<D, 4, kCopy>, 4); break;
    default: run(decode_mma_kernel<D, 2, kCopy>, 2); break;
  }
}

template <DecodeCopy kCopy, typename F>
void with_decode_mma_copy(int head_dim, F&& f) {
  if (head_dim <= 32) with_decode_mma_stages<32, kCopy>(f);
  else if (head_dim <= 64) with_decode_mma_stages<64, kCopy>(f);
  else if (head_dim <= 96) with_decode_mma_stages<96, kCopy>(f);
  else with_decode_mma_stages<128, kCopy>(f);
}

// The copy PODKV_CUDA_DECODE_COPY asks for (DecodeCopy, above the kernel), read once: "runs" unless
// the device lacks bulk copies or the shared memory they take.
DecodeCopy decode_copy() {
  static const DecodeCopy copy = [] {
    const char* e = std::getenv("PODKV_CUDA_DECODE_COPY");
    const std::string name = e != nullptr ? e : "";
    if (name == "lane") return DecodeCopy::kLane;
    if (name == "tile") return DecodeCopy::kTile;
    const DecodeCopy bulk = name == "bulk" ? DecodeCopy::kBulk : DecodeCopy::kRuns;
    int device = 0, major = 0, smem = 0;
    const bool known = cudaGetDevice(&device) == cudaSuccess &&
                       cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                       cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) == cudaSuccess;
    const size_t need = static_cast<size_t>(kWarps) * std::max(decode_stages(), 1) * BulkStage<128, false>::kBytes + 1024;
    return known && major >= 9 && static_cast<size_t>(smem) >= need ? bulk : DecodeCopy::kTile;
  }();
  return copy;
}

// bulk_ok: the pages and entries allow bulk copies (16-byte multiples; entries of 2 x head_dim bytes,
// the rows bulk_tiles reads).
template <typename F>
void with_decode_mma_kernel(int head_dim, int64_t page_tokens, bool bulk_ok, F&& f) {
  const DecodeCopy copy = decode_copy();
  if (page_tokens < 16 || copy == DecodeCopy::kLane) with_decode_mma_copy<DecodeCopy::kLane>(head_dim, f);
  else if (copy == DecodeCopy::kRuns && bulk_ok) with_decode_mma_copy<DecodeCopy::kRuns>(head_dim, f);
  else if (copy == DecodeCopy::kBulk && bulk_ok) with_decode_mma_copy<DecodeCopy::kBulk>(head_dim, f);
  else with_decode_mma_copy<DecodeCopy::kTile>(head_dim, f);
}

}  // namespace

bool decode_attention_fits(int head_dim) { return head_dim % 8 == 0 && head_dim <= kMaxHeadDim; }

size_t decode_attention_partial_floats(int64_t rows, int num_heads, int splits, int head_dim) {
  return static_cast<size_t>(rows) * num_heads * splits * partial_stride(head_dim);
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
      launch_pdl(PdlUse::kDecode, kernel, grid, dim3(kWarps * 32), smem, stream, "decode_mma_kernel", step, launch, q,
                 splits, partials);
    });
  } else {
    launch_simt(step, launch, q, splits, partials, stream);
  }
  launch_merge(step, launch, splits, partials, stream);
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

}  // namespace podkv::cuda
