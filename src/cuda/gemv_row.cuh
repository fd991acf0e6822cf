// The one-row GEMVs' inner pieces (gemv.cu, decode_chain.cu): eight bf16 weights
// times eight floats, and 16-byte read-only loads kept in program order.
#pragma once

#include <cstdint>

namespace podkv::cuda {

// Eight bf16 weights (one 16-byte load) times eight floats of x, in a fixed order (every
// one-row kernel sums a chunk this way).
__device__ __forceinline__ float dot8(const uint4 p, const float4 a, const float4 b) {
  const uint32_t words[4] = {p.x, p.y, p.z, p.w};
  float wf[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    wf[2 * i] = __uint_as_float(words[i] << 16);
    wf[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
  return wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w + wf[4] * b.x + wf[5] * b.y + wf[6] * b.z + wf[7] * b.w;
}

// 16-byte read-only loads as volatile asm, which the compiler keeps in program order among
// themselves: written so that a group's loads are issued before its first product. (The timed
// kernels use these; the same kernels with __ldg were not timed, so what the asm buys is unmeasured.)
__device__ __forceinline__ uint4 load_nc(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ float4 load_nc(const float4* p) {
  float4 v;
  asm volatile("ld.global.nc.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p));
  return v;
}

}  // namespace podkv::cuda
