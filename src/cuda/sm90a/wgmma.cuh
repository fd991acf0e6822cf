// Hopper's warpgroup MMA (wgmma, PTX ISA 8.0+, sm_90a only): a warpgroup of 4
// consecutive warps computes D[64 x N] (+)= A[64 x 16] B[16 x N] with A in
// registers (or shared memory) and B in shared memory, asynchronously.
//  - A fragments: warp w of the group holds rows 16w .. 16w + 15 in mma.m16n8k16's A layout
//    (lane = 4 g + c: rows g | g + 8, columns 2c, 2c+1 | 2c+8, 2c+9); or A in shared memory,
//    by a descriptor like B's (K-major).
//  - D fragments: warp w's rows in mma's C layout, one [4] per n-block of 8 columns.
//  - B: a 64-bit descriptor of a tile stored with the 128-byte swizzle: rows of 128 bytes,
//    16-byte chunk c of row r at chunk c ^ (r % 8), 8-row atoms 1024-byte aligned.
//    K-major (B[k][n] stored as rows n, k contiguous: the keys of S = Q Kᵀ): atoms of 8 n-rows at
//    `stride` bytes (SBO); a k-step of 16 elements is 32 bytes into the row.
//    MN-major (kTransB = 1, rows k, n contiguous: the values of O = P V): atoms of 8 k-rows at
//    `stride` bytes (SBO), the next 64 n-columns `leading` bytes on (LBO).
// Order: wgmma_fence() before the first wgmma of a batch (registers written since), commit,
// then wgmma_wait<0>() before the accumulators are read; shared memory written by the threads
// (cp.async included) needs fence_proxy_async() before the barrier that precedes the wgmma.
#pragma once

#include <cstdint>

#include "cuda/sm90a/barriers.cuh"  // fence_proxy_async

namespace podkv::cuda::sm90a {

__device__ __forceinline__ uint64_t smem_descriptor(const void* tile, uint32_t leading, uint32_t stride) {
  const uint64_t address = static_cast<uint32_t>(__cvta_generic_to_shared(tile));
  return ((address & 0x3ffffu) >> 4) | (static_cast<uint64_t>(leading >> 4) << 16) |
         (static_cast<uint64_t>(stride >> 4) << 32) | (1ull << 62);  // 62-63: 1 = 128-byte swizzle
}

// The descriptor of the same tile `bytes` further on (the address field is its low 14 bits, and
// shared addresses stay below 2^18, so the add never carries out of the low word: a 32-bit add, the
// high word untouched, saves the carry chain the kernels would otherwise pay per wgmma).
__device__ __forceinline__ uint64_t offset_descriptor(uint64_t descriptor, uint32_t bytes) {
  const uint32_t lo = static_cast<uint32_t>(descriptor) + (bytes >> 4);
  return (descriptor & 0xffffffff00000000ull) | lo;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// Keeps the compiler from moving reads or writes of accumulators across a wait (the wgmma writes
// them behind its back).
template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N][4]) {
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[n][e])::"memory");
}

// The operand lists of the two shapes differ only in their length: an n-block's 4 accumulators
// ("+f", read and written), 8 n-blocks' worth, and the instruction's register lists.
#define PODKV_WGMMA_ACC4(n) "+f"(d[n][0]), "+f"(d[n][1]), "+f"(d[n][2]), "+f"(d[n][3])
#define PODKV_WGMMA_ACC32(n)                                                                      \
  PODKV_WGMMA_ACC4(n), PODKV_WGMMA_ACC4(n + 1), PODKV_WGMMA_ACC4(n + 2), PODKV_WGMMA_ACC4(n + 3),   \
      PODKV_WGMMA_ACC4(n + 4), PODKV_WGMMA_ACC4(n + 5), PODKV_WGMMA_ACC4(n + 6), PODKV_WGMMA_ACC4(n + 7)
#define PODKV_WGMMA_REGS_0_31 \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "         \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define PODKV_WGMMA_REGS_32_63 \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

// D[64 x 64] (+)= A B: A in registers, B by descriptor (kTransB 1: MN-major).
template <int kTransB>
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[8][4], const uint32_t (&a)[4], uint64_t b_desc, bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %38, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {" PODKV_WGMMA_REGS_0_31 "}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, %37;\n}\n"
      : PODKV_WGMMA_ACC32(0)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "n"(kTransB), "r"(static_cast<int>(accumulate)));
}

// D[64 x 128] (+)= A B, the same with 16 n-blocks.
template <int kTransB>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[16][4], const uint32_t (&a)[4], uint64_t b_desc,
                                                 bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %70, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" PODKV_WGMMA_REGS_0_31 "," PODKV_WGMMA_REGS_32_63 "}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, %69;\n}\n"
      : PODKV_WGMMA_ACC32(0), PODKV_WGMMA_ACC32(8)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "n"(kTransB), "r"(static_cast<int>(accumulate)));
}

// D[64 x 128] (+)= A B with A by descriptor too, both K-major (S = Q Kᵀ of 128 keys, Q in shared
// memory).
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[16][4], uint64_t a_desc, uint64_t b_desc,
                                                    bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" PODKV_WGMMA_REGS_0_31 "," PODKV_WGMMA_REGS_32_63 "}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : PODKV_WGMMA_ACC32(0), PODKV_WGMMA_ACC32(8)
      : "l"(a_desc), "l"(b_desc), "r"(static_cast<int>(accumulate)));
}

#undef PODKV_WGMMA_ACC4
#undef PODKV_WGMMA_ACC32
#undef PODKV_WGMMA_REGS_0_31
#undef PODKV_WGMMA_REGS_32_63

}  // namespace podkv::cuda::sm90a
