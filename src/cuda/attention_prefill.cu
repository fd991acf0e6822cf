// Prefill attention on the tensor cores (flash-attention-2 style tiles) for
// bf16 KV entries without selection stores: one block per (tile of 64
// consecutive query rows of one sequence, query head). Each of its 4 warps
// owns 16 rows. Per 64-key tile of the paged cache, copied to shared memory:
//   S = Q Kᵀ        bf16 WMMA 16x16x16, float32 accumulation
//   online softmax  per row, the proximal and distant masses kept apart (gate)
//   O += P V        P rounded to bf16, float32 accumulation, O in shared memory
// PoD's two key sources: when a head reads its distant keys from another
// layer (the block anchor), the proximal keys (sink + recent window, its own
// layer) and the distant ones (anchor's keys, its own values) are two passes
// over the key tiles with complementary masks; otherwise one pass. Tiles no
// row of the block needs are skipped. A head whose anchor gate is >= tau masks
// its distant keys (counted once per row). Q and P are rounded to bf16 like
// FlashAttention's; the cache's entries are bf16 already.
#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"
#include "cuda/paged.cuh"
#include "kv/token_classes.h"

namespace podkv::cuda {

namespace {

using namespace nvcuda;

constexpr int kRows = 64;   // query rows per block
constexpr int kTileKeys = 64;  // keys per tile
constexpr int kWarps = 4;   // 16 rows each

struct Layout {  // shared memory, in bytes from the start; every region 32-byte aligned
  int d, ld_h, ld_s, ld_p, ld_o;
  size_t q, k, v, s, p, o_acc, o_tile, row_stats, total;
};

__host__ __device__ inline size_t align32(size_t x) { return (x + 31) / 32 * 32; }

__host__ __device__ inline Layout layout_for(int d) {
  Layout l{};
  l.d = d;
  l.ld_h = d + 8;       // bf16 rows of Q, K, V
  l.ld_s = kTileKeys + 4;   // float scores
  l.ld_p = kTileKeys + 8;   // bf16 probabilities
  l.ld_o = d + 4;       // float outputs
  size_t at = 0;
  l.q = at, at = align32(at + sizeof(uint16_t) * kRows * l.ld_h);
  l.k = at, at = align32(at + sizeof(uint16_t) * kTileKeys * l.ld_h);
  l.v = at, at = align32(at + sizeof(uint16_t) * kTileKeys * l.ld_h);
  l.s = at, at = align32(at + sizeof(float) * kRows * l.ld_s);
  l.p = at, at = align32(at + sizeof(uint16_t) * kRows * l.ld_p);
  l.o_acc = at, at = align32(at + sizeof(float) * kRows * l.ld_o);
  l.o_tile = at, at = align32(at + sizeof(float) * kRows * l.ld_o);
  l.row_stats = at, at = align32(at + sizeof(float) * kRows * 4);  // max, proximal sum, distant sum, correction
  l.total = at;
  return l;
}

// Copies keys and values [k0, k0 + 64) of two streams (bf16 rows of d) into rows of ld_h, zeros where
// there is no entry. The 64 rows' addresses are looked up once (page table, division) into `rows`.
__device__ void load_tiles(const DeviceStep& s, const DeviceStream& ks, const DeviceStream& vs, int64_t k0,
                           int64_t limit, uint16_t* K, uint16_t* V, int ld_h, const uint8_t** rows) {
  const int t = threadIdx.x;
  if (t < 2 * kTileKeys) {
    const int64_t j = k0 + t % kTileKeys;
    rows[t] = j < limit ? entry_at(s, t < kTileKeys ? ks : vs, j) : nullptr;
  }
  __syncthreads();
  const int chunks = s.head_dim / 8;
  for (int x = t; x < 2 * kTileKeys * chunks; x += blockDim.x) {
    const int r = x / chunks, c = x % chunks;
    const uint8_t* e = rows[r];
    uint4 v = make_uint4(0, 0, 0, 0);
    if (e != nullptr) v = reinterpret_cast<const uint4*>(e)[c];
    uint16_t* dst = r < kTileKeys ? K + r * ld_h : V + (r - kTileKeys) * ld_h;
    *reinterpret_cast<uint4*>(dst + 8 * c) = v;
  }
}

__global__ void __launch_bounds__(kWarps * 32)
    prefill_kernel(DeviceStep s, AttentionLaunch a, const float* q, const int32_t* tiles) {
  extern __shared__ __align__(32) uint8_t smem[];
  const int d = s.head_dim, H = a.num_heads, Hkv = s.num_kv_heads, layer = a.layer;
  const Layout L = layout_for(d);
  uint16_t* Q = reinterpret_cast<uint16_t*>(smem + L.q);
  uint16_t* K = reinterpret_cast<uint16_t*>(smem + L.k);
  uint16_t* V = reinterpret_cast<uint16_t*>(smem + L.v);
  float* S = reinterpret_cast<float*>(smem + L.s);
  uint16_t* P = reinterpret_cast<uint16_t*>(smem + L.p);
  float* O = reinterpret_cast<float*>(smem + L.o_acc);
  float* OT = reinterpret_cast<float*>(smem + L.o_tile);
  float* stats = reinterpret_cast<float*>(smem + L.row_stats);  // [kRows][4]
  __shared__ const uint8_t* tile_rows[2 * kTileKeys];

  const int b = tiles[2 * blockIdx.x], i = blockIdx.y, h = i / (H / Hkv);
  const int64_t row0 = s.row_begin[b] + tiles[2 * blockIdx.x + 1];
  const int64_t rows = s.row_begin[b + 1] - row0 < kRows ? s.row_begin[b + 1] - row0 : kRows;
  const int64_t pos0 = s.first_pos[b] + (row0 - s.row_begin[b]);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

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

  // Q rows in bf16; row statistics; O = 0.
  for (int t = threadIdx.x; t < kRows * d; t += blockDim.x) {
    const int r = t / d, c = t % d;
    const float x = r < rows ? q[((row0 + r) * H + i) * d + c] : 0.0f;
    Q[r * L.ld_h + c] = f32_to_bf16_bits(x);
    O[r * L.ld_o + c] = 0.0f;
  }
  for (int r = threadIdx.x; r < kRows; r += blockDim.x) {
    stats[4 * r] = -INFINITY, stats[4 * r + 1] = 0.0f, stats[4 * r + 2] = 0.0f, stats[4 * r + 3] = 0.0f;
  }
  // Per row (two lanes per row of the warp's 16): its position, classes and tau skip.
  const int my_row = warp * 16 + lane / 2, half = lane % 2;
  const int64_t pos = pos0 + my_row;
  const bool row_valid = my_row < rows;
  const int64_t s_end = sink_end(pos, s.sink_tokens, split);
  const int64_t r_begin = recent_begin(pos, s.sink_tokens, s.recent_tokens, split);
  const bool distant = split && r_begin > s_end;
  const bool skip = row_valid && distant && shared_keys && kr.distant_source >= 0 && a.tau < 1.0f &&
                    a.all_gates != nullptr && a.all_gates[(kr.distant_source * s.rows + row0 + my_row) * H + i] >= a.tau;
  if (skip && half == 0) atomicAdd(a.skipped, 1ULL);
  // The block's extremes for skipping tiles: positions pos0 .. pos0 + rows - 1.
  const int64_t last = pos0 + rows - 1;
  const int64_t sink_max = sink_end(last, s.sink_tokens, split);
  const int64_t recent_min = recent_begin(pos0, s.sink_tokens, s.recent_tokens, split);
  const int64_t recent_max = recent_begin(last, s.sink_tokens, s.recent_tokens, split);
  const int64_t sink_min = sink_end(pos0, s.sink_tokens, split);
  __syncthreads();

  for (int pass = 0; pass < (one_pass || !has_distant_source ? 1 : 2); ++pass) {
    // Pass 0: own streams (all keys when one_pass, else sink + recent); pass 1: the distant source.
    const bool dist_pass = pass == 1;
    const DeviceStream ks = stream_of(s, b, podkv::kKeys, dist_pass ? kd : kp, h);
    const DeviceStream vs = stream_of(s, b, podkv::kValues, dist_pass ? vd : vp, h);
    for (int64_t k0 = 0; k0 <= last; k0 += kTileKeys) {
      const int64_t k1 = k0 + kTileKeys;
      bool needed;
      if (one_pass) needed = true;
      else if (dist_pass) needed = k0 < recent_max && k1 > sink_min;
      else needed = k0 < sink_max || k1 > recent_min;
      if (!needed) continue;
      __syncthreads();  // the previous tile is used up
      load_tiles(s, ks, vs, k0, last + 1, K, V, L.ld_h, tile_rows);
      __syncthreads();
      // S (16 x 64 per warp) = Q Kᵀ.
      {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kTileKeys / 16];
#pragma unroll
        for (int n = 0; n < kTileKeys / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);
        for (int k = 0; k < d; k += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> qa;
          wmma::load_matrix_sync(qa, reinterpret_cast<const __nv_bfloat16*>(Q + warp * 16 * L.ld_h + k), L.ld_h);
#pragma unroll
          for (int n = 0; n < kTileKeys / 16; ++n) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> kb;
            wmma::load_matrix_sync(kb, reinterpret_cast<const __nv_bfloat16*>(K + n * 16 * L.ld_h + k), L.ld_h);
            wmma::mma_sync(acc[n], qa, kb, acc[n]);
          }
        }
#pragma unroll
        for (int n = 0; n < kTileKeys / 16; ++n)
          wmma::store_matrix_sync(S + warp * 16 * L.ld_s + n * 16, acc[n], L.ld_s, wmma::mem_row_major);
      }
      __syncwarp();
      // Online softmax of the row's 32 columns of this lane.
      {
        float* srow = S + my_row * L.ld_s + half * 32;
        float x[32];
        float tile_max = -INFINITY;
#pragma unroll
        for (int c = 0; c < 32; ++c) {
          const int64_t j = k0 + half * 32 + c;
          const bool in_distant = distant && j >= s_end && j < r_begin;
          bool allowed = row_valid && j <= pos;
          if (!one_pass) allowed = allowed && (dist_pass ? in_distant : !in_distant);
          if (in_distant && skip) allowed = false;
          x[c] = allowed ? srow[c] * a.scale : -INFINITY;
          tile_max = fmaxf(tile_max, x[c]);
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        float* st = stats + 4 * my_row;
        const float m_old = st[0];
        const float m = fmaxf(m_old, tile_max);
        const float correction = m_old == -INFINITY ? 0.0f : expf(m_old - m);
        float sum_p = 0.0f, sum_d = 0.0f;
        uint16_t* prow = P + my_row * L.ld_p + half * 32;
#pragma unroll
        for (int c = 0; c < 32; ++c) {
          const float p = m == -INFINITY || x[c] == -INFINITY ? 0.0f : expf(x[c] - m);
          const int64_t j = k0 + half * 32 + c;
          if (distant && j >= s_end && j < r_begin) sum_d += p;
          else sum_p += p;
          prow[c] = f32_to_bf16_bits(p);
        }
        sum_p += __shfl_xor_sync(0xffffffffu, sum_p, 1);
        sum_d += __shfl_xor_sync(0xffffffffu, sum_d, 1);
        __syncwarp();
        if (half == 0) {
          st[0] = m;
          st[1] = st[1] * correction + sum_p;
          st[2] = st[2] * correction + sum_d;
          st[3] = correction;
        }
      }
      __syncwarp();
      // O_tile (16 x d per warp) = P V; O = O * correction + O_tile.
      for (int n = 0; n < d; n += 16) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int k = 0; k < kTileKeys; k += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> pa;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> vb;
          wmma::load_matrix_sync(pa, reinterpret_cast<const __nv_bfloat16*>(P + warp * 16 * L.ld_p + k), L.ld_p);
          wmma::load_matrix_sync(vb, reinterpret_cast<const __nv_bfloat16*>(V + k * L.ld_h + n), L.ld_h);
          wmma::mma_sync(acc, pa, vb, acc);
        }
        wmma::store_matrix_sync(OT + warp * 16 * L.ld_o + n, acc, L.ld_o, wmma::mem_row_major);
      }
      __syncwarp();
      for (int t = lane; t < 16 * d; t += 32) {
        const int r = warp * 16 + t / d, c = t % d;
        O[r * L.ld_o + c] = O[r * L.ld_o + c] * stats[4 * r + 3] + OT[r * L.ld_o + c];
      }
    }
  }
  __syncthreads();
  for (int t = threadIdx.x; t < rows * d; t += blockDim.x) {
    const int r = t / d, c = t % d;
    const float total = stats[4 * r + 1] + stats[4 * r + 2];
    a.out[((row0 + r) * H + i) * d + c] = O[r * L.ld_o + c] / total;
  }
  if (a.all_gates != nullptr)
    for (int r = threadIdx.x; r < rows; r += blockDim.x)
      a.all_gates[(static_cast<int64_t>(layer) * s.rows + row0 + r) * H + i] =
          stats[4 * r + 1] / (stats[4 * r + 1] + stats[4 * r + 2]);
}

}  // namespace

bool prefill_attention_fits(int head_dim, int32_t kv_dtype, int num_groups) {
  return static_cast<KvDType>(kv_dtype) == KvDType::BF16 && head_dim % 16 == 0 && head_dim <= kMaxHeadDim &&
         num_groups == 0;
}

void prefill_attention(const DeviceStep& step, const AttentionLaunch& launch, const float* q, const int32_t* tiles,
                       int64_t num_tiles, cudaStream_t stream) {
  if (num_tiles == 0) return;
  check(prefill_attention_fits(step.head_dim, step.dtype, step.num_groups),
        "cuda prefill attention: needs bf16 entries, head_dim a multiple of 16 up to 128 and no selection");
  const size_t smem = layout_for(step.head_dim).total;
  check_cuda(cudaFuncSetAttribute(prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "cudaFuncSetAttribute(prefill_kernel)");
  const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(launch.num_heads));
  prefill_kernel<<<grid, kWarps * 32, smem, stream>>>(step, launch, q, tiles);
  check_launch("prefill_kernel");
}

int prefill_tile_rows() { return kRows; }

}  // namespace podkv::cuda
