// Per-token ops, written so that a decode step (one token, or a small batch)
// spends next to nothing here: measured on the 100M preset (hidden 768,
// intermediate 2048, 12 layers) they took 120-175 µs a token before (scalar
// expf in silu_mul, sin/cos recomputed in each of the 24 RoPE calls of a token),
// ~2% of a decode step. OpenMP teams start only when a call has enough work to
// pay for waking them (a few µs, far more on a loaded machine).
#include "ops/elementwise.h"

#include <cmath>
#include <cstring>

#include "util/simd.h"

namespace podkv {
namespace {

constexpr int64_t kParallelMinElements = 1 << 16;

#if defined(__AVX512F__)
// e^x for 16 floats, Cephes expf (range reduction by ln 2 in two parts, degree-6
// polynomial, relative error ~1-2 ulp); x is clamped to ±88, where expf is
// (almost) inf or 0 anyway.
__m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}
#endif

// Σ row[i]² in double (8 double lanes × 2 accumulators when vectorised).
double sum_squares(const float* row, int64_t n) {
  int64_t i = 0;
  double ss = 0.0;
#if defined(__AVX512F__)
  __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
  for (; i + 16 <= n; i += 16) {
    const __m512d lo = _mm512_cvtps_pd(_mm256_loadu_ps(row + i));
    const __m512d hi = _mm512_cvtps_pd(_mm256_loadu_ps(row + i + 8));
    a0 = _mm512_fmadd_pd(lo, lo, a0);
    a1 = _mm512_fmadd_pd(hi, hi, a1);
  }
  ss = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
#endif
  for (; i < n; ++i) ss += static_cast<double>(row[i]) * row[i];
  return ss;
}

// cos/sin of position · inv_freq[i], i < half (≤ 1024), for one token. The
// tables of the last position are kept per thread with the frequencies they were
// made from: the q and k RoPE of every layer of a decode step ask for the same
// position and frequencies (24 calls per token on a 12-layer model).
struct RopeTables {
  int64_t position = -1;
  int half = 0;
  float inv_freq[1024];
  float cos[1024], sin[1024];

  void update(int64_t pos, const float* freq, int h) {
    if (pos == position && h == half && std::memcmp(freq, inv_freq, static_cast<size_t>(h) * 4) == 0) return;
    for (int i = 0; i < h; ++i) {
      const float angle = static_cast<float>(pos) * freq[i];  // float32, as transformers
      cos[i] = std::cos(angle);
      sin[i] = std::sin(angle);
    }
    std::memcpy(inv_freq, freq, static_cast<size_t>(h) * 4);
    position = pos;
    half = h;
  }
};

// for (i < n) body(i), on an OpenMP team only when `parallel`: even a region
// with a false if() clause costs ~0.5 µs in the runtime, as much as a small op.
template <class F>
void for_each(int64_t n, bool parallel, F body) {
  if (parallel && n > 1) {
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) body(i);
  } else {
    for (int64_t i = 0; i < n; ++i) body(i);
  }
}

}  // namespace

void rms_norm(const float* x, const float* weight, int64_t tokens, int64_t n, double eps, float* out) {
  for_each(tokens, tokens * n >= kParallelMinElements, [&](int64_t t) {
    const float* row = x + t * n;
    // Sum of squares in double: the reference (transformers) does it in float32,
    // but the extra precision only moves results by float rounding.
    const double ss = sum_squares(row, n);
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    float* o = out + t * n;
    for (int64_t i = 0; i < n; ++i) o[i] = row[i] * inv * weight[i];
  });
}

void apply_rope(float* x, int64_t tokens, int heads, int dim, const int64_t* positions, const float* inv_freq,
                bool interleaved) {
  const int half = dim / 2 < 1024 ? dim / 2 : 1024;
  for_each(tokens, tokens * heads * dim >= kParallelMinElements, [&](int64_t t) {
    thread_local RopeTables tables;
    tables.update(positions[t], inv_freq, half);
    const float* cos_table = tables.cos;
    const float* sin_table = tables.sin;
    for (int h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * dim;
      for (int i = 0; i < half; ++i) {
        const int a = interleaved ? 2 * i : i;
        const int b = interleaved ? 2 * i + 1 : i + dim / 2;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * cos_table[i] - x1 * sin_table[i];
        v[b] = x1 * cos_table[i] + x0 * sin_table[i];
      }
    }
  });
}

void silu_mul(float* gate, const float* up, int64_t n) {
  // Chunks of 4096 so the vector loop runs per thread over whole chunks.
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  for_each(chunks, n >= kParallelMinElements, [&](int64_t c) {
    const int64_t end = c * kChunk + kChunk < n ? c * kChunk + kChunk : n;
    int64_t i = c * kChunk;
#if defined(__AVX512F__)
    for (; i + 16 <= end; i += 16) {
      const __m512 g = _mm512_loadu_ps(gate + i);
      const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
      const __m512 s = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
      _mm512_storeu_ps(gate + i, _mm512_mul_ps(s, _mm512_loadu_ps(up + i)));
    }
#endif
    for (; i < end; ++i) {
      const float g = gate[i];
      gate[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

}  // namespace podkv
