// Shared-memory tiles and tensor-core fragments of the fused training
// attention (train_flash.cu): 64-row tiles of bf16 rows padded to D + 8
// elements (conflict-free ldmatrix), cp.async double buffering, and the two
// products every pass is made of: S = A Xᵀ (product_nt) and O += P X
// (product_pn), each over kM row blocks of 16 that share every B fragment.
// Fragment layouts (PTX ISA, mma.m16n8k16): lane = 4 g + c;
//   A: (row g | g+8, cols 2c, 2c+1 | 2c+8, 2c+9);  B: (rows 2c, 2c+1 | 2c+8, 2c+9, col g);
//   C: (row g | g+8, cols 2c, 2c+1) — a C tile of 16 x 16 is the A fragment of the next product.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/warp_attention.cuh"

namespace podkv::cuda::train::flash {

using bf16 = __nv_bfloat16;
constexpr int kTile = 64;
constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
struct Shape {
  static constexpr int kStride = D + 8;          // smem row, elements
  static constexpr int kTileElems = kTile * kStride;
};

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

// A fragment of rows r0..r0+15, columns k0..k0+15 of a row-major tile.
template <int D>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* tile, int r0, int k0, int lane) {
  ldsm_x4(a, tile + (r0 + lane % 16) * Shape<D>::kStride + k0 + (lane / 16) * 8);
}

// B fragments of n-blocks n0 and n0+8 (b[0..1], b[2..3]) at k-step k0 from a tile X[n][k].
template <int D>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const bf16* tile, int n0, int k0, int lane) {
  ldsm_x4(b, tile + (n0 + lane % 8 + (lane / 16) * 8) * Shape<D>::kStride + k0 + ((lane / 8) % 2) * 8);
}

// The same from a tile X[k][n].
template <int D>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const bf16* tile, int k0, int n0, int lane) {
  ldsm_x4_trans(b, tile + (k0 + lane % 8 + ((lane / 8) % 2) * 8) * Shape<D>::kStride + n0 + (lane / 16) * 8);
}

// rows [0, valid) of src [kRows][D] (bf16 bits) into the tile; the rest zero.
template <int D, int kRows = kTile>
__device__ __forceinline__ void load_tile(bf16* tile, const uint16_t* src, int64_t valid) {
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < kRows * kChunks; i += kThreads) {
    const int r = i / kChunks, ch = i % kChunks;
    const uint4 v = r < valid ? reinterpret_cast<const uint4*>(src + static_cast<int64_t>(r) * D)[ch]
                              : make_uint4(0, 0, 0, 0);
    *reinterpret_cast<uint4*>(tile + r * Shape<D>::kStride + ch * 8) = v;
  }
}

// The same with cp.async (16 bytes per copy, zero-filled past `valid`): the
// copies land while the warps compute on the other buffer.
template <int D>
__device__ __forceinline__ void load_tile_async(bf16* tile, const uint16_t* src, int64_t valid) {
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < kTile * kChunks; i += kThreads) {
    const int r = i / kChunks, ch = i % kChunks;
    const bool ok = r < valid;
    const uint16_t* from = src + (ok ? static_cast<int64_t>(r) * D + ch * 8 : 0);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(tile + r * Shape<D>::kStride + ch * 8)),
                 "l"(from), "r"(ok ? 16 : 0));
  }
}

__device__ __forceinline__ void async_commit() { asm volatile("cp.async.commit_group;\n"); }
// Waits until at most `pending` committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// acc[m][16 x 64] = A[m][16 x D] · X[64 x D]ᵀ for kM row blocks, with A in
// fragments and X a tile X[n][k]: each B fragment read from shared memory
// feeds kM products.
template <int D, int kM>
__device__ __forceinline__ void product_nt(float (&acc)[kM][8][4], const uint32_t (&a)[kM][D / 16][4], const bf16* x,
                                           int lane) {
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) acc[m][nb][0] = acc[m][nb][1] = acc[m][nb][2] = acc[m][nb][3] = 0.0f;
#pragma unroll
  for (int p = 0; p < 4; ++p)
#pragma unroll
    for (int s = 0; s < D / 16; ++s) {
      uint32_t b[4];
      load_b_nk<D>(b, x, 16 * p, 16 * s, lane);
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        mma_bf16_16816(acc[m][2 * p], a[m][s], b[0], b[1]);
        mma_bf16_16816(acc[m][2 * p + 1], a[m][s], b[2], b[3]);
      }
    }
}

template <int D>
__device__ __forceinline__ void product_nt(float (&acc)[8][4], const uint32_t (&a)[D / 16][4], const bf16* x,
                                           int lane) {
  product_nt<D, 1>(reinterpret_cast<float(&)[1][8][4]>(acc), reinterpret_cast<const uint32_t(&)[1][D / 16][4]>(a), x,
                   lane);
}

// out[m][16 x D] += P[m][16 x 64] · X[64 x D] with P in C fragments and X a tile X[k][n].
template <int D, int kM>
__device__ __forceinline__ void product_pn(float (&out)[kM][D / 8][4], const float (&p)[kM][8][4], const bf16* x,
                                           int lane) {
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    uint32_t a[kM][4];
#pragma unroll
    for (int m = 0; m < kM; ++m) {
      a[m][0] = pack_bf16x2(p[m][2 * s][0], p[m][2 * s][1]);
      a[m][1] = pack_bf16x2(p[m][2 * s][2], p[m][2 * s][3]);
      a[m][2] = pack_bf16x2(p[m][2 * s + 1][0], p[m][2 * s + 1][1]);
      a[m][3] = pack_bf16x2(p[m][2 * s + 1][2], p[m][2 * s + 1][3]);
    }
#pragma unroll
    for (int d = 0; d < D / 16; ++d) {
      uint32_t b[4];
      load_b_kn<D>(b, x, 16 * s, 16 * d, lane);
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        mma_bf16_16816(out[m][2 * d], a[m], b[0], b[1]);
        mma_bf16_16816(out[m][2 * d + 1], a[m], b[2], b[3]);
      }
    }
  }
}

template <int D>
__device__ __forceinline__ void product_pn(float (&out)[D / 8][4], const float (&p)[8][4], const bf16* x, int lane) {
  product_pn<D, 1>(reinterpret_cast<float(&)[1][D / 8][4]>(out), reinterpret_cast<const float(&)[1][8][4]>(p), x,
                   lane);
}

template <int D>
__device__ __forceinline__ void load_fragments(uint32_t (&a)[D / 16][4], const bf16* tile, int r0, int lane) {
#pragma unroll
  for (int s = 0; s < D / 16; ++s) load_a<D>(a[s], tile, r0, 16 * s, lane);
}

}  // namespace podkv::cuda::train::flash
