// Training attention fused on the tensor cores (flash-attention-2 style,
// mma.sync m16n8k16, bf16 operands, float32 accumulation), with PoD's two key
// sources: query t reads the anchor layer's keys for key j when
// sink <= j <= t - recent, the layer's own keys otherwise, and always the
// layer's own values. Nothing of size seq² is stored: the forward keeps each
// row's log-sum-exp, the backward recomputes the probabilities.
//
// Blocks are 4 warps over tiles of 64 rows; a warp owns 16 rows of the
// block's tile (the mma's M). Operands are staged in shared memory as bf16
// rows of D + 8 elements (the padding makes ldmatrix conflict-free) and read
// as fragments with ldmatrix (.trans where the tile is [k][n]):
//   forward   (query tile, head, sequence): S = Q Kᵀ, online softmax, O += P V
//   dq        (query tile, head, sequence): S, P, dP = dO Vᵀ, dS, dQ += dS K
//   dkv       (key tile, KV head, sequence) over the query heads of the KV
//             head and the query tiles at or below the diagonal:
//             Sᵀ = K Qᵀ, Pᵀ, dV += Pᵀ dO, dPᵀ = V dOᵀ, dSᵀ, dK += dSᵀ Q
// Splitting dQ from dK/dV costs two recomputed products but needs no atomics.
// Scores are kept in log2 units (x = s · scale · log2 e), so lse2 = max + log2(sum).
// The tiles and fragments are in flash_tiles.cuh.
#include <cuda_bf16.h>

#include <cfloat>

#include "cuda/cuda_check.h"
#include "cuda/flash_tiles.cuh"
#include "cuda/train_kernels.h"

namespace podkv::cuda::train {

namespace {

using namespace flash;

__device__ __forceinline__ bool is_distant(const FlashArgs& a, int t, int j) { return j >= a.sink && j <= t - a.recent; }

__device__ __forceinline__ void zero(float (&x)[8][4]) {
#pragma unroll
  for (int nb = 0; nb < 8; ++nb) x[nb][0] = x[nb][1] = x[nb][2] = x[nb][3] = 0.0f;
}

// What a warp's tile of queries [t_lo, t_hi] x keys [j_lo, j_hi] needs
// (warp-uniform, so the branches on it do not diverge):
//   masked: some (query, key) is past the diagonal or outside the sequence,
//           so the tile takes the per-element path;
//   empty:  every key is past every query (nothing to do);
//   near / far: some score reads the layer's own keys / the anchor's (PoD).
// A tile that is not masked and reads one source only takes the fast path:
// one FFMA and one exp per score, no positions.
struct TileKind {
  bool masked, empty, near, far;
};

template <bool kPod>
__device__ __forceinline__ TileKind classify(const FlashArgs& a, int t_lo, int t_hi, int j_lo, int j_hi) {
  TileKind k;
  k.masked = j_hi > t_lo || t_hi >= a.seq;
  k.empty = j_lo > t_hi;
  if (!kPod) {
    k.near = true, k.far = false;
  } else {
    const bool all_far = j_lo >= a.sink && j_hi <= t_lo - a.recent;
    const bool none_far = j_hi < a.sink || j_lo > t_hi - a.recent;
    k.near = !all_far, k.far = !none_far;
  }
  return k;
}

// Rows of a head in the head-major bf16 layout [batch][heads][seq][D].
__device__ __forceinline__ int64_t head_rows(const FlashArgs& a, int64_t b, int heads, int h, int d) {
  return ((b * heads + h) * a.seq) * d;
}

// Key and value tiles of one step: [2] buffers (double-buffered), each K, V
// and the anchor's K, copied from the head's rows k, v, ka [seq][D].
template <int D, bool kPod>
struct KeyTiles {
  bf16* base;
  const uint16_t *k_rows, *v_rows, *ka_rows;
  int64_t seq;
  __device__ bf16* k(int buf) const { return base + (3 * buf) * Shape<D>::kTileElems; }
  __device__ bf16* v(int buf) const { return base + (3 * buf + 1) * Shape<D>::kTileElems; }
  __device__ bf16* ka(int buf) const { return base + (3 * buf + 2) * Shape<D>::kTileElems; }
  __device__ void load(int buf, int64_t k0) const {
    load_tile_async<D>(k(buf), k_rows + k0 * D, seq - k0);
    load_tile_async<D>(v(buf), v_rows + k0 * D, seq - k0);
    if (kPod) load_tile_async<D>(ka(buf), ka_rows + k0 * D, seq - k0);
    async_commit();
  }
  // Before step kt of kt = 0..last (step 0's copies started by load(0, 0)):
  // starts step kt + 1's copies into the other buffer, waits for step kt's.
  __device__ void advance(int kt, int last) const {
    if (kt < last) {
      load((kt & 1) ^ 1, static_cast<int64_t>(kt + 1) * kTile);
      async_wait<1>();
    } else {
      async_wait<0>();
    }
    __syncthreads();
  }
};

template <int D, bool kPod>
__device__ __forceinline__ KeyTiles<D, kPod> key_tiles(const FlashArgs& a, bf16* base, int64_t b, int gk) {
  const int64_t rows = head_rows(a, b, a.kv_heads, gk, D);
  return {base, a.k + rows, a.v + rows, kPod ? a.anchor_k[gk] + rows : nullptr, a.seq};
}

// Query rows per warp in the forward: 32 (two mma row blocks sharing every
// key fragment) where the registers allow, 16 otherwise.
template <int D, bool kPod>
constexpr int forward_row_blocks() {
  return D == 64 && !kPod ? 2 : 1;
}

template <int D, bool kPod>
__global__ void __launch_bounds__(kThreads) forward_kernel(FlashArgs a) {
  constexpr int kM = forward_row_blocks<D, kPod>(), kRows = kTile * kM;  // query rows: per warp 16 kM, per block
  extern __shared__ uint4 smem_words[];
  bf16* sq = reinterpret_cast<bf16*>(smem_words);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, gk = h / (a.heads / a.kv_heads);
  const int64_t b = blockIdx.z;
  const int q0 = qt * kRows, seq = static_cast<int>(a.seq);
  const int last = (min(q0 + kRows, seq) - 1) / kTile;  // the last key tile any query of the block sees
  const KeyTiles<D, kPod> tiles = key_tiles<D, kPod>(a, sq + kM * Shape<D>::kTileElems, b, gk);
  tiles.load(0, 0);
  load_tile<D, kRows>(sq, a.q + head_rows(a, b, a.heads, h, D) + static_cast<int64_t>(q0) * D, seq - q0);
  __syncthreads();
  const int r0 = q0 + 16 * kM * warp;  // the warp's rows r0 .. r0 + 16 kM - 1
  uint32_t qa[kM][D / 16][4];
#pragma unroll
  for (int m = 0; m < kM; ++m) load_fragments<D>(qa[m], sq, 16 * kM * warp + 16 * m, lane);
  const float scale2 = a.scale * kLog2e;
  float o[kM][D / 8][4] = {};
  float m_run[kM][2], l[kM][2] = {};
#pragma unroll
  for (int m = 0; m < kM; ++m) m_run[m][0] = m_run[m][1] = -INFINITY;
  for (int kt = 0; kt <= last; ++kt) {
    const int k0 = kt * kTile, buf = kt & 1;
    tiles.advance(kt, last);
    const TileKind kind = classify<kPod>(a, r0, r0 + 16 * kM - 1, k0, k0 + kTile - 1);
    if (!kind.empty) {
      float s[kM][8][4];
      if (kind.near) product_nt<D, kM>(s, qa, tiles.k(buf), lane);
      if (kPod && kind.far) {
        if (!kind.near) {
          product_nt<D, kM>(s, qa, tiles.ka(buf), lane);
        } else {
          float sa[kM][8][4];
          product_nt<D, kM>(sa, qa, tiles.ka(buf), lane);
#pragma unroll
          for (int m = 0; m < kM; ++m)
#pragma unroll
            for (int nb = 0; nb < 8; ++nb)
#pragma unroll
              for (int i = 0; i < 4; ++i)
                if (is_distant(a, r0 + 16 * m + g + 8 * (i / 2), k0 + nb * 8 + 2 * c + (i & 1))) s[m][nb][i] = sa[m][nb][i];
        }
      }
#pragma unroll
      for (int m = 0; m < kM; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int t = r0 + 16 * m + g + 8 * r;
          float mx = -INFINITY;
#pragma unroll
          for (int nb = 0; nb < 8; ++nb)
#pragma unroll
            for (int i = 2 * r; i < 2 * r + 2; ++i) {
              if (kind.masked && k0 + nb * 8 + 2 * c + (i & 1) > t) s[m][nb][i] = -INFINITY;
              mx = fmaxf(mx, s[m][nb][i]);
            }
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          // Every row sees key k0 (tiles start on the block's diagonal or below), so m_new is finite.
          const float m_new = fmaxf(m_run[m][r], mx * scale2);
          const float correction = fast_exp2(m_run[m][r] - m_new);
          float sum = 0.0f;
#pragma unroll
          for (int nb = 0; nb < 8; ++nb)
#pragma unroll
            for (int i = 2 * r; i < 2 * r + 2; ++i) {
              s[m][nb][i] = fast_exp2(fmaf(s[m][nb][i], scale2, -m_new));
              sum += s[m][nb][i];
            }
          l[m][r] = l[m][r] * correction + sum;
          m_run[m][r] = m_new;
#pragma unroll
          for (int d = 0; d < D / 8; ++d) o[m][d][2 * r] *= correction, o[m][d][2 * r + 1] *= correction;
        }
      product_pn<D, kM>(o, s, tiles.v(buf), lane);
    }
    __syncthreads();  // the next step's copies go into this buffer
  }
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[m][r] += __shfl_xor_sync(0xffffffffu, l[m][r], 1);
      l[m][r] += __shfl_xor_sync(0xffffffffu, l[m][r], 2);
      const int t = r0 + 16 * m + g + 8 * r;
      if (t >= seq) continue;
      const float inv = 1.0f / l[m][r];
      float* out = a.out + ((b * a.seq + t) * a.heads + h) * D;
#pragma unroll
      for (int d = 0; d < D / 8; ++d)
        *reinterpret_cast<float2*>(out + d * 8 + 2 * c) =
            make_float2(o[m][d][2 * r] * inv, o[m][d][2 * r + 1] * inv);
      if (c == 0) a.lse[(b * a.heads + h) * a.seq + t] = m_run[m][r] + log2f(l[m][r]);
    }
}

// P and dS of a 16 x 64 tile, in place: s holds the layer's scores (where
// kind.near), sa the anchor's (where kind.far), dp = dO Vᵀ. On exit s = dS at
// the layer's keys, sa = dS at the anchor's, p (if wanted) = P. row0/col0 give
// the positions; lse2 and dot are per query: [2] (rows g, g + 8) untransposed,
// [64] (the tile's columns, shared memory) transposed.
template <bool kPod, bool kTransposed>
__device__ __forceinline__ void score_gradients(const FlashArgs& a, const TileKind& kind, float (&s)[8][4],
                                                float (&sa)[8][4], const float (&dp)[8][4], const float* lse2,
                                                const float* dot, int row0, int col0, int g, int c, float (*p)[4]) {
  const float scale2 = a.scale * kLog2e;
  // Where the query of element (nb, i) sits in lse2 / dot.
  auto local_t = [&](int nb, int i) { return kTransposed ? nb * 8 + 2 * c + (i & 1) : i / 2; };
  if (!kind.masked && !(kind.near && kind.far)) {
    // One source, nothing masked: the fast path.
    auto fast = [&](float(&x)[8][4]) {
#pragma unroll
      for (int nb = 0; nb < 8; ++nb)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int lt = local_t(nb, i);
          const float prob = fast_exp2(fmaf(x[nb][i], scale2, -lse2[lt]));
          if (p != nullptr) p[nb][i] = prob;
          x[nb][i] = prob * (dp[nb][i] - dot[lt]);
        }
    };
    if (kind.near) fast(s);
    else fast(sa);
    return;
  }
  if (!kind.near) zero(s);
  if (kPod && !kind.far) zero(sa);
  const int seq = static_cast<int>(a.seq);
#pragma unroll
  for (int nb = 0; nb < 8; ++nb)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // Not transposed: rows are queries (local row g | g+8), columns keys. Transposed: rows are keys.
      const int r = row0 + g + 8 * (i / 2), cc = col0 + nb * 8 + 2 * c + (i & 1);
      const int t = kTransposed ? cc : r, j = kTransposed ? r : cc;
      const int lt = local_t(nb, i);
      const bool far = kPod && is_distant(a, t, j);
      const float x = (far ? sa[nb][i] : s[nb][i]) * scale2;
      const float prob = j <= t && t < seq ? fast_exp2(x - lse2[lt]) : 0.0f;
      const float ds = prob * (dp[nb][i] - dot[lt]);
      if (p != nullptr) p[nb][i] = prob;
      s[nb][i] = far ? 0.0f : ds;
      if (kPod) sa[nb][i] = far ? ds : 0.0f;
    }
}

// Blocks per SM the backward kernels are compiled for: 3 where 168 registers
// hold everything (dense, head_dim 64), else whatever the registers allow.
template <int D, bool kPod>
constexpr int backward_min_blocks() {
  return D == 64 && !kPod ? 3 : 1;
}

template <int D, bool kPod>
__global__ void __launch_bounds__(kThreads, backward_min_blocks<D, kPod>()) dq_kernel(FlashArgs a) {
  extern __shared__ uint4 smem_words[];
  bf16* sq = reinterpret_cast<bf16*>(smem_words);
  bf16* sd = sq + Shape<D>::kTileElems;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, gk = h / (a.heads / a.kv_heads);
  const int64_t b = blockIdx.z;
  const int q0 = qt * kTile, seq = static_cast<int>(a.seq);
  const KeyTiles<D, kPod> tiles = key_tiles<D, kPod>(a, sd + Shape<D>::kTileElems, b, gk);
  tiles.load(0, 0);
  uint32_t qa[D / 16][4], da[D / 16][4];
  load_tile<D>(sq, a.q + head_rows(a, b, a.heads, h, D) + static_cast<int64_t>(q0) * D, seq - q0);
  load_tile<D>(sd, a.dout + head_rows(a, b, a.heads, h, D) + static_cast<int64_t>(q0) * D, seq - q0);
  __syncthreads();
  load_fragments<D>(qa, sq, 16 * warp, lane);
  load_fragments<D>(da, sd, 16 * warp, lane);
  const int row0 = q0 + 16 * warp;
  float lse2[2], dot[2];  // of rows g and g + 8
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int t = row0 + g + 8 * i;
    const int64_t at = (b * a.heads + h) * a.seq + t;
    lse2[i] = t < seq ? a.lse[at] : 0.0f;
    dot[i] = t < seq ? a.dot[at] : 0.0f;
  }
  float dq[D / 8][4] = {};
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile, buf = kt & 1;
    tiles.advance(kt, qt);
    const TileKind kind = classify<kPod>(a, row0, row0 + 15, k0, k0 + kTile - 1);
    float s[8][4], sa[8][4], dp[8][4];
    if (kind.near) product_nt<D>(s, qa, tiles.k(buf), lane);
    if (kPod && kind.far) product_nt<D>(sa, qa, tiles.ka(buf), lane);
    product_nt<D>(dp, da, tiles.v(buf), lane);
    score_gradients<kPod, false>(a, kind, s, sa, dp, lse2, dot, row0, k0, g, c, nullptr);
    if (kind.near) product_pn<D>(dq, s, tiles.k(buf), lane);
    if (kPod && kind.far) product_pn<D>(dq, sa, tiles.ka(buf), lane);
    __syncthreads();
  }
  for (int r = 0; r < 2; ++r) {
    const int t = row0 + g + 8 * r;
    if (t >= seq) continue;
    float* out = a.dq + ((b * a.seq + t) * a.heads + h) * D;
#pragma unroll
    for (int d = 0; d < D / 8; ++d)
      *reinterpret_cast<float2*>(out + d * 8 + 2 * c) = make_float2(dq[d][2 * r] * a.scale, dq[d][2 * r + 1] * a.scale);
  }
}

// out rows [key][D] of a warp's 16 keys: `add` accumulates, else overwrites.
template <int D>
__device__ __forceinline__ void store_key_rows(float* base, const FlashArgs& a, int64_t b, int gk, int key0, int g,
                                               int c, const float (&acc)[D / 8][4], float factor, bool add) {
  for (int r = 0; r < 2; ++r) {
    const int j = key0 + g + 8 * r;
    if (j >= a.seq) continue;
    float* out = base + ((b * a.seq + j) * a.kv_heads + gk) * D;
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      float2* p = reinterpret_cast<float2*>(out + d * 8 + 2 * c);
      const float2 v = make_float2(acc[d][2 * r] * factor, acc[d][2 * r + 1] * factor);
      *p = add ? make_float2(p->x + v.x, p->y + v.y) : v;
    }
  }
}

template <int D, bool kPod>
__global__ void __launch_bounds__(kThreads, backward_min_blocks<D, kPod>()) dkv_kernel(FlashArgs a) {
  extern __shared__ uint4 smem_words[];
  bf16* sk = reinterpret_cast<bf16*>(smem_words);
  bf16* sv = sk + Shape<D>::kTileElems;
  bf16* ska = sv + Shape<D>::kTileElems;
  bf16* queries = ska + Shape<D>::kTileElems;  // [2] x (Q, dO), double-buffered
  float* rows = reinterpret_cast<float*>(queries + 4 * Shape<D>::kTileElems);  // [2] x (lse2, dot) [kTile]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const int kt = blockIdx.x, gk = blockIdx.y, group = a.heads / a.kv_heads;
  const int64_t b = blockIdx.z;
  const int seq = static_cast<int>(a.seq), k0 = kt * kTile, key0 = k0 + 16 * warp;
  const int tiles = (seq + kTile - 1) / kTile, per_head = tiles - kt, steps = group * per_head;
  // Step i: query head gk · group + i / per_head, query tile kt + i % per_head, into buffer i % 2.
  auto load_step = [&](int i) {
    const int h = gk * group + i / per_head;
    const int q0 = (kt + i % per_head) * kTile;
    bf16* q = queries + 2 * (i & 1) * Shape<D>::kTileElems;
    load_tile_async<D>(q, a.q + head_rows(a, b, a.heads, h, D) + static_cast<int64_t>(q0) * D, seq - q0);
    load_tile_async<D>(q + Shape<D>::kTileElems, a.dout + head_rows(a, b, a.heads, h, D) + static_cast<int64_t>(q0) * D,
                       seq - q0);
    async_commit();
    float* r = rows + 2 * (i & 1) * kTile;
    for (int j = threadIdx.x; j < kTile; j += kThreads) {
      const int t = q0 + j;
      const int64_t at = (b * a.heads + h) * a.seq + t;
      r[j] = t < seq ? a.lse[at] : 0.0f;
      r[kTile + j] = t < seq ? a.dot[at] : 0.0f;
    }
  };
  load_step(0);
  load_tile<D>(sk, a.k + head_rows(a, b, a.kv_heads, gk, D) + static_cast<int64_t>(k0) * D, seq - k0);
  load_tile<D>(sv, a.v + head_rows(a, b, a.kv_heads, gk, D) + static_cast<int64_t>(k0) * D, seq - k0);
  if (kPod) load_tile<D>(ska, a.anchor_k[gk] + head_rows(a, b, a.kv_heads, gk, D) + static_cast<int64_t>(k0) * D, seq - k0);
  float dk[D / 8][4] = {}, dka[D / 8][4] = {}, dv[D / 8][4] = {};
  for (int i = 0; i < steps; ++i) {
    const int q0 = (kt + i % per_head) * kTile;
    if (i + 1 < steps) {
      load_step(i + 1);
      async_wait<1>();
    } else {
      async_wait<0>();
    }
    __syncthreads();
    const bf16* sq = queries + 2 * (i & 1) * Shape<D>::kTileElems;
    const bf16* sd = sq + Shape<D>::kTileElems;
    const float* slse = rows + 2 * (i & 1) * kTile;
    // Transposed: rows are the warp's keys, columns the tile's queries.
    const TileKind kind = classify<kPod>(a, q0, q0 + kTile - 1, key0, key0 + 15);
    uint32_t frag[D / 16][4];
    float s[8][4], sa[8][4], dp[8][4], p[8][4];
    if (kind.near) {
      load_fragments<D>(frag, sk, 16 * warp, lane);
      product_nt<D>(s, frag, sq, lane);  // Sᵀ
    }
    if (kPod && kind.far) {
      load_fragments<D>(frag, ska, 16 * warp, lane);
      product_nt<D>(sa, frag, sq, lane);
    }
    load_fragments<D>(frag, sv, 16 * warp, lane);
    product_nt<D>(dp, frag, sd, lane);  // dPᵀ = V dOᵀ
    score_gradients<kPod, true>(a, kind, s, sa, dp, slse, slse + kTile, key0, q0, g, c, p);
    product_pn<D>(dv, p, sd, lane);
    if (kind.near) product_pn<D>(dk, s, sq, lane);
    if (kPod && kind.far) product_pn<D>(dka, sa, sq, lane);
    __syncthreads();
  }
  store_key_rows<D>(a.dv, a, b, gk, key0, g, c, dv, 1.0f, false);
  store_key_rows<D>(a.dk, a, b, gk, key0, g, c, dk, a.scale, true);
  // The anchor's gradient rows: when the head is its own anchor they are dk's (same buffer, same block).
  if (kPod) store_key_rows<D>(a.anchor_dk[gk], a, b, gk, key0, g, c, dka, a.scale, true);
}

// x f32 [batch · seq, heads, d] (rows token-major) -> bf16 [batch][heads][seq][d],
// 8 elements per thread (d is a multiple of 8: 64 or 128).
__global__ void to_head_major_kernel(const float* x, int64_t batch, int64_t seq, int heads, int d, bf16* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * seq * heads * d / 8) return;
  const int e = static_cast<int>(i % (d / 8)) * 8;
  const int64_t row = i / (d / 8);  // (token, head)
  const int h = static_cast<int>(row % heads);
  const int64_t token = row / heads, b = token / seq, t = token % seq;
  const float4 lo = reinterpret_cast<const float4*>(x + row * d + e)[0];
  const float4 hi = reinterpret_cast<const float4*>(x + row * d + e)[1];
  const uint4 packed = make_uint4(pack_bf16x2(lo.x, lo.y), pack_bf16x2(lo.z, lo.w), pack_bf16x2(hi.x, hi.y),
                                  pack_bf16x2(hi.z, hi.w));
  *reinterpret_cast<uint4*>(out + ((b * heads + h) * seq + t) * d + e) = packed;
}

// dot[(b · heads + h) · seq + t] = Σ_e dout · out over the head's row (warp per row).
__global__ void row_dot_kernel(const float* dout, const float* out, int64_t batch, int64_t seq, int heads, int d,
                               float* dot) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= batch * seq * heads) return;
  float s = 0.0f;
  for (int e = lane; e < d; e += 32) s += dout[row * d + e] * out[row * d + e];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const int h = static_cast<int>(row % heads);
  const int64_t token = row / heads, b = token / seq, t = token % seq;
  if (lane == 0) dot[(b * heads + h) * seq + t] = s;
}

template <typename Kernel>
void launch(Kernel kernel, dim3 grid, size_t smem, const FlashArgs& a, cudaStream_t stream, const char* name) {
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)), name);
  kernel<<<grid, kThreads, smem, stream>>>(a);
  check_launch(name);
}

template <int D>
void run(FlashPass pass, const FlashArgs& a, cudaStream_t stream) {
  const unsigned tiles = static_cast<unsigned>((a.seq + kTile - 1) / kTile);
  const size_t tile_bytes = Shape<D>::kTileElems * sizeof(bf16);
  const bool pod = a.anchor_k != nullptr;
  switch (pass) {
    case FlashPass::Forward: {
      const int m = pod ? forward_row_blocks<D, true>() : forward_row_blocks<D, false>();
      const unsigned row_tiles = static_cast<unsigned>((a.seq + m * kTile - 1) / (m * kTile));
      launch(pod ? forward_kernel<D, true> : forward_kernel<D, false>, dim3(row_tiles, a.heads, a.batch),
             (6 + m) * tile_bytes, a, stream, "flash forward_kernel");
      break;
    }
    case FlashPass::Dq:
      launch(pod ? dq_kernel<D, true> : dq_kernel<D, false>, dim3(tiles, a.heads, a.batch), 8 * tile_bytes, a, stream,
             "flash dq_kernel");
      break;
    case FlashPass::Dkv:
      launch(pod ? dkv_kernel<D, true> : dkv_kernel<D, false>, dim3(tiles, a.kv_heads, a.batch),
             7 * tile_bytes + 4 * kTile * sizeof(float), a, stream, "flash dkv_kernel");
      break;
  }
}

}  // namespace

bool flash_supported(int head_dim) { return head_dim == 64 || head_dim == 128; }

void flash_attention(FlashPass pass, const FlashArgs& a, cudaStream_t stream) {
  if (a.batch * a.seq == 0) return;
  if (a.dim == 64) run<64>(pass, a, stream);
  else if (a.dim == 128) run<128>(pass, a, stream);
  else throw Error("flash attention: head_dim " + std::to_string(a.dim) + " is not 64 or 128");
}

void to_head_major(const float* x, int64_t batch, int64_t seq, int heads, int dim, void* out, cudaStream_t stream) {
  const int64_t n = batch * seq * heads * dim / 8;
  if (n == 0) return;
  check(dim % 8 == 0, "to_head_major: head_dim " + std::to_string(dim) + " is not a multiple of 8");
  to_head_major_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(x, batch, seq, heads, dim,
                                                                                  static_cast<bf16*>(out));
  check_launch("to_head_major_kernel");
}

void row_dot(const float* dout, const float* out, int64_t batch, int64_t seq, int heads, int dim, float* dot,
             cudaStream_t stream) {
  const int64_t rows = batch * seq * heads;
  if (rows == 0) return;
  row_dot_kernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(dout, out, batch, seq, heads, dim, dot);
  check_launch("row_dot_kernel");
}

}  // namespace podkv::cuda::train
