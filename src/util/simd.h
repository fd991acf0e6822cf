// <immintrin.h> for the SIMD kernels (matmul, attention, KV entries), when the target has AVX2 or AVX-512.
//
// GCC 12 warns "'__Y' may be used uninitialized" inside its own AVX-512
// intrinsic headers (GCC bug 105593, fixed in GCC 13) once they are inlined under
// -Wall; the warning is about the headers' deliberate `__Y = __Y` idiom, not our
// code, so it is silenced for the header text only.
#pragma once

#if defined(__AVX512F__) || defined(__AVX2__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#if defined(__AVX2__)
namespace podkv {
// The sum of a vector's 8 lanes, as a tree.
inline float reduce_add(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
}  // namespace podkv
#endif

#if defined(__AVX512F__) && defined(__AVX512DQ__)
namespace podkv {
// The lane sums of four vectors at once, [Σ a0, Σ a1, Σ a2, Σ a3]: pairwise within 128-bit lanes,
// then the four 128-bit lanes (13 shuffles and adds instead of 4 × 8).
inline __m128 reduce4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
  const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
  // each 128-bit lane: [a0, a1, a2, a3] partial sums
  const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(s01, s23, 0x44), _mm512_shuffle_ps(s01, s23, 0xEE));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
}  // namespace podkv
#endif
