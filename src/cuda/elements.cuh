// Device-side reading and writing of stored elements: weight rows (F32, F16,
// BF16, Q8_0, as util/dtype.h) and KV entries (kv/kv_entry.h), bit-for-bit
// the CPU's conversions. Q8_0 blocks may sit at odd addresses: bytes are read
// one at a time there.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "kv/kv_entry.h"
#include "util/dtype.h"

namespace podkv::cuda {

// SwiGLU's product silu(g) * u, one expression for every kernel that forms it (the same float32 result).
__device__ __forceinline__ float silu_mul_value(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

// Round to nearest even, NaN stays NaN (util/dtype.h's f32_to_bf16).
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// util/dtype.cpp's f32_to_f16 in integers (round to nearest even). Used for the
// q8_0 scale: with the scale from cvt.rn.f16.f32 stored byte by byte, sm_90
// builds of CUDA 13.0 were seen storing 0 for the low byte.
__device__ __forceinline__ uint32_t f32_to_f16_bits(float f) {
  const uint32_t bits = __float_as_uint(f);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // overflow to inf (rounded)
  if (abs < 0x38800000u) {                        // subnormal or zero in f16
    if (abs < 0x33000000u) return sign;
    const uint32_t exponent = abs >> 23;
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
    return sign | half;
  }
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return sign | ((rounded - 0x38000000u) >> 13);
}

__device__ __forceinline__ float f16_bytes_to_f32(const uint8_t* p) {
  const uint16_t bits = static_cast<uint16_t>(p[0] | (p[1] << 8));
  return __half2float(__ushort_as_half(bits));
}

// Element k of a row in a stored weight type (Q8_0: blocks of 32 values, each an f16 scale and 32 int8).
__device__ __forceinline__ float weight_element(DType t, const uint8_t* row, int64_t k) {
  switch (t) {
    case DType::F32: return reinterpret_cast<const float*>(row)[k];
    case DType::F16: return __half2float(reinterpret_cast<const __half*>(row)[k]);
    case DType::BF16: return bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[k]);
    case DType::Q8_0: {
      const uint8_t* block = row + (k / kQ8BlockSize) * kQ8BlockBytes;
      return f16_bytes_to_f32(block) * static_cast<float>(static_cast<int8_t>(block[2 + k % kQ8BlockSize]));
    }
    default: return 0.0f;
  }
}

// A warp holds one head_dim vector: lane l has elements l, l + 32, l + 64, l + 96 (zero past d).
constexpr int kLaneElems = 4;

// Decodes entry `e` of type T into the lane's elements.
template <KvDType T>
__device__ __forceinline__ void decode_entry(const uint8_t* e, int lane, int d, float (&x)[kLaneElems]) {
#pragma unroll
  for (int c = 0; c < kLaneElems; ++c) {
    const int i = lane + 32 * c;
    float v = 0.0f;
    if (e != nullptr && i < d) {
      if constexpr (T == KvDType::F32) v = reinterpret_cast<const float*>(e)[i];
      else if constexpr (T == KvDType::F16) v = __half2float(reinterpret_cast<const __half*>(e)[i]);
      else if constexpr (T == KvDType::BF16) v = bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(e)[i]);
      else {
        // Block c of 32 values starts at c * 34 (every earlier block is whole).
        const uint8_t* block = e + c * 34;
        v = f16_bytes_to_f32(block) * static_cast<float>(static_cast<int8_t>(block[2 + lane]));
      }
    }
    x[c] = v;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum_double(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// 1 / sqrt(mean of the squares + eps) of a row whose squares each thread of the block (kBlock
// threads) summed in `ss`: one warp-shuffle reduction, one pass over the block's warp sums, two
// barriers; every thread gets the answer (rms_norm_kernel, rms_norm_vec4_kernel, decode_chain's
// load_normed).
template <int kBlock>
__device__ __forceinline__ float inverse_rms(double ss, int64_t n, double eps) {
  static_assert(kBlock % 32 == 0 && kBlock <= 32 * 32, "whole warps, whose sums one warp adds");
  __shared__ double warp_sums[kBlock / 32];
  __shared__ float inv_shared;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  ss = warp_sum_double(ss);
  if (lane == 0) warp_sums[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    double t = lane < kBlock / 32 ? warp_sums[lane] : 0.0;
    t = warp_sum_double(t);
    if (lane == 0) inv_shared = static_cast<float>(1.0 / sqrt(t / static_cast<double>(n) + eps));
  }
  __syncthreads();
  return inv_shared;
}

// Qwen3's per-head norm of one head vector by one warp: y[i] = x[i] / rms(x) * w[i], i < dim <= 128
// (4 elements a lane, squares summed in double). y may be x. head_rms_norm_kernel (norm.cu) and the
// float32 split + RoPE + KV write (kv_write.cu) share it, so both give the same bits.
__device__ __forceinline__ void rms_norm_head(const float* x, float* y, const float* w, int dim, double eps, int lane) {
  float v[4];
  double ss = 0.0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int i = lane + 32 * k;
    v[k] = i < dim ? x[i] : 0.0f;
    ss += static_cast<double>(v[k]) * v[k];
  }
  ss = warp_sum_double(ss);
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int i = lane + 32 * k;
    if (i < dim) y[i] = v[k] * inv * w[i];
  }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Encodes the warp's vector into entry `e` (every lane of the warp takes part).
template <KvDType T>
__device__ __forceinline__ void encode_entry(const float (&x)[kLaneElems], int lane, int d, uint8_t* e) {
#pragma unroll
  for (int c = 0; c < kLaneElems; ++c) {
    const int i = lane + 32 * c;
    if constexpr (T == KvDType::Q8_0) {
      if (32 * c >= d) break;  // warp-uniform
      // kv_entry.cpp: scale = max|x| / 127 stored as f16; q = lround(x / scale) with the unrounded scale.
      const float amax = warp_max(i < d ? fabsf(x[c]) : 0.0f);
      const float scale = amax / 127.0f;
      const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
      uint8_t* block = e + c * 34;
      if (lane == 0) {
        const uint32_t s = f32_to_f16_bits(scale);
        block[0] = static_cast<uint8_t>(s & 0xffu);
        block[1] = static_cast<uint8_t>(s >> 8);
      }
      if (i < d) block[2 + lane] = static_cast<uint8_t>(static_cast<int8_t>(lroundf(x[c] * inv)));
    } else if (i < d) {
      if constexpr (T == KvDType::F32) reinterpret_cast<float*>(e)[i] = x[c];
      else if constexpr (T == KvDType::F16) reinterpret_cast<__half*>(e)[i] = __float2half_rn(x[c]);
      else reinterpret_cast<uint16_t*>(e)[i] = f32_to_bf16_bits(x[c]);
    }
  }
}

}  // namespace podkv::cuda
