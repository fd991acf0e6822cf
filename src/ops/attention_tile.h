// Register-tiled building blocks of the blocked (prefill) attention kernel:
// a 4-row × (NV·W)-column multiply-accumulate micro-kernel and a vector exp.
//
// Written with GCC/Clang vector extensions so that one source gives AVX-512
// (W = 16), AVX2 (W = 8) or SSE/NEON (W = 4) code; with -march=native the
// inner loop of `tile_4xN` is NV vector loads, 4 broadcasts and 4·NV FMAs.
#pragma once

#include <cstdint>
#include <cstring>

namespace podkv::detail {

#if defined(__AVX512F__)
inline constexpr int kVecWidth = 16;
#elif defined(__AVX__)
inline constexpr int kVecWidth = 8;
#else
inline constexpr int kVecWidth = 4;
#endif

using vfloat = float __attribute__((vector_size(kVecWidth * 4)));
using vint = int32_t __attribute__((vector_size(kVecWidth * 4)));

inline vfloat load(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vfloat v) { std::memcpy(p, &v, sizeof v); }
// All lanes x (folded to a constant for literals; outside the hot loops otherwise).
inline vfloat splat(float x) { return vfloat{} + x; }
inline vint load_int(const int32_t* p) {
  vint v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// exp(x) for x <= 0 (softmax arguments), Cephes' expf: x = n·ln2 + r with
// |r| <= ln2/2, a degree-6 polynomial for exp(r), 2^n from the exponent bits.
// Relative error about 2e-7 (a few ulp). Arguments below -87 give ~1e-38,
// not 0; callers select 0 for masked entries.
inline vfloat exp_nonpositive(vfloat x) {
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  const vfloat magic = splat(12582912.0f);  // 1.5·2^23: adding it rounds to an integer
  const vfloat n = (x * splat(1.44269504088896341f) + magic) - magic;
  vfloat r = x - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  vfloat p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.0f);
  const vint bits = (__builtin_convertvector(n, vint) + 127) << 23;
  vfloat scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// c[i][0 .. NV·W) (+)= Σ_k a[i][k · a_step] · b[k][b_col .. b_col + NV·W) for i < 4.
// `a` are 4 row pointers read with stride a_step (broadcast operands); `b` are
// K row pointers (a key or value row per k, or rows of a transposed block).
template <int NV>
inline void tile_4xN(const float* const a[4], int64_t a_step, const float* const* b, int64_t b_col, int64_t k_count,
                     float* const c[4], bool accumulate) {
  // Fully unrolled so that the 4·NV accumulators live in registers.
  vfloat acc[4][NV];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = accumulate ? load(c[i] + v * kVecWidth) : vfloat{};
  for (int64_t k = 0; k < k_count; ++k) {
    const float* brow = b[k] + b_col;
    vfloat bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = load(brow + v * kVecWidth);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const float ai = a[i][k * a_step];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += ai * bv[v];  // scalar · vector: a broadcast FMA
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) store(c[i] + v * kVecWidth, acc[i][v]);
}

// tile_4xN for a panel of `vectors` (1..4) vectors of W columns.
inline void tile_4xV(int vectors, const float* const a[4], int64_t a_step, const float* const* b, int64_t b_col,
                     int64_t k_count, float* const c[4], bool accumulate) {
  switch (vectors) {
    case 4: tile_4xN<4>(a, a_step, b, b_col, k_count, c, accumulate); break;
    case 3: tile_4xN<3>(a, a_step, b, b_col, k_count, c, accumulate); break;
    case 2: tile_4xN<2>(a, a_step, b, b_col, k_count, c, accumulate); break;
    default: tile_4xN<1>(a, a_step, b, b_col, k_count, c, accumulate); break;
  }
}

}  // namespace podkv::detail
