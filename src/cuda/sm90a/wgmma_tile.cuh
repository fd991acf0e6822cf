// What the two wgmma prefill kernels share (attention_prefill_wgmma.cu: the lockstep block;
// attention_prefill_producer.cu: a copying warpgroup feeding two computing ones): the shared-memory
// layout of a tile of keys and values (64 keys, or 128 for the copying kernel's 128-key steps; a
// warpgroup's Q tile has the same layout with 64 rows), the zeros that stand in for a missing
// entry, and a warpgroup's two products on a tile.
//   S[64 x 64]  = Q Kᵀ    D/16 wgmma m64n64k16, A = Q from registers, B = the key tile (K-major)
//   S[64 x 128] = Q Kᵀ    D/16 wgmma m64n128k16, A = the Q tile, B = a 128-key tile (issue_scores_128)
//   O[64 x D]  += P V     (keys / 16) wgmma m64n128k16, A = P (bf16) from registers, B = the value
//                         tile (MN-major: rows are keys, the head's elements contiguous)
#pragma once

#include <cstdint>

#include "cuda/prefill_warp.cuh"
#include "cuda/sm90a/wgmma.cuh"

namespace podkv::cuda::sm90a {

// One stage of shared memory: [kind: keys, values][D / 64 column blocks][kKeys rows][128 bytes],
// each column block (kKeys / 8) 1024-byte aligned 8-row atoms, 16-byte chunks swizzled by row.
// A warpgroup's Q in shared memory has a kind's layout with 64 rows.
template <int D, int kKeys = prefill::kSmemTileKeys>
struct WgmmaTile {
  static constexpr int kColumnBlockBytes = kKeys * 128;
  static constexpr int kKindBytes = kKeys * D * 2;
  static constexpr int kStageBytes = 2 * kKindBytes;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr int kRowBytes = 2 * D;  // a row: D bf16 values
  // Byte offset of 16-byte chunk ch (head elements 8 ch .. 8 ch + 7) of row r in a kind's tile.
  static __device__ __forceinline__ int offset(int r, int ch) {
    return (ch / 8) * kColumnBlockBytes + r * 128 + (((ch % 8) ^ (r % 8)) << 4);
  }
};

// Where a tile row has no entry (past the last key, or no page), its copy reads zeros from here
// instead (device globals start zeroed, and nothing writes this one): every copy is then a whole
// 16 bytes from a valid address, with no test per copy. One per file (static: whole-program CUDA).
static __device__ __align__(128) uint8_t zero_entry[WgmmaTile<128>::kChunks * 16];

// The swizzle pattern repeats every 1024 bytes of the address: the tiles start on such a boundary
// (the kernels ask for 1 KB more dynamic shared memory than their stages take).
__device__ __forceinline__ uint8_t* align_1024(uint8_t* smem) {
  return smem + ((1024 - (static_cast<uint32_t>(__cvta_generic_to_shared(smem)) & 1023)) & 1023);
}

// Issues S = Q Kᵀ of a warpgroup's 64 rows (Q's A fragments, [D / 16][4] per thread) against the
// key tile of descriptor `keys` (smem_descriptor(tile, 16, 1024)), as one commit group.
template <int D>
__device__ __forceinline__ void issue_scores(float (&x)[8][4], const uint32_t (&qa)[D / 16][4], uint64_t keys) {
  using Tile = WgmmaTile<D>;
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < D / 16; ++k)  // 16 head elements: 32 bytes into a column block's rows
    wgmma_m64n64k16<0>(x, qa[k], offset_descriptor(keys, (k / 4) * Tile::kColumnBlockBytes + (k % 4) * 32), k > 0);
  wgmma_commit();
}

// The same against the key tile at `keys_tile`.
template <int D>
__device__ __forceinline__ void issue_scores(float (&x)[8][4], const uint32_t (&qa)[D / 16][4], const uint8_t* keys_tile) {
  issue_scores<D>(x, qa, smem_descriptor(keys_tile, 16, 1024));
}

// Issues S = Q Kᵀ of 128 keys (a 128-row key tile) with Q in shared memory (a 64-row tile of the
// same layout), as one commit group; the tiles by their descriptors (smem_descriptor(tile, 16, 1024)).
template <int D>
__device__ __forceinline__ void issue_scores_128(float (&x)[16][4], uint64_t q, uint64_t keys) {
  using Q = WgmmaTile<D, 64>;
  using K = WgmmaTile<D, 128>;
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < D / 16; ++k)
    wgmma_m64n128k16_ss(x, offset_descriptor(q, (k / 4) * Q::kColumnBlockBytes + (k % 4) * 32),
                        offset_descriptor(keys, (k / 4) * K::kColumnBlockBytes + (k % 4) * 32), k > 0);
  wgmma_commit();
}

// P (the probabilities in x, rounded to bf16) as A fragments: keys 16 u .. 16 u + 15.
template <int NB>
__device__ __forceinline__ void pack_probabilities(const float (&x)[NB][4], uint32_t (&p)[NB / 2][4]) {
#pragma unroll
  for (int u = 0; u < NB / 2; ++u) {
    p[u][0] = pack_bf16x2(x[2 * u][0], x[2 * u][1]);
    p[u][1] = pack_bf16x2(x[2 * u][2], x[2 * u][3]);
    p[u][2] = pack_bf16x2(x[2 * u + 1][0], x[2 * u + 1][1]);
    p[u][3] = pack_bf16x2(x[2 * u + 1][2], x[2 * u + 1][3]);
  }
}

// The descriptor of a value tile of kKeys keys: 8-key atoms 1024 bytes apart, the next 64 head
// elements a column block on.
template <int D, int kKeys>
__device__ __forceinline__ uint64_t values_descriptor(const uint8_t* values_tile) {
  return smem_descriptor(values_tile, WgmmaTile<D, kKeys>::kColumnBlockBytes, 1024);
}

// Issues O += P V against the value tile of 16 U keys with descriptor `values` (the caller commits
// the group; p must not change until it has completed).
template <int D, int U>
__device__ __forceinline__ void issue_values(float (&o)[16][4], const uint32_t (&p)[U][4], uint64_t values) {
  fence_operands(o);
  wgmma_fence();
#pragma unroll
  for (int u = 0; u < U; ++u) wgmma_m64n128k16<1>(o, p[u], offset_descriptor(values, u * 2048), true);
}

// The same against the value tile at `values_tile`.
template <int D, int U>
__device__ __forceinline__ void issue_values(float (&o)[16][4], const uint32_t (&p)[U][4], const uint8_t* values_tile) {
  issue_values<D>(o, p, values_descriptor<D, 16 * U>(values_tile));
}

}  // namespace podkv::cuda::sm90a
