#include "ops/elementwise.h"

#include <cmath>

namespace podkv {

void rms_norm(const float* x, const float* weight, int64_t tokens, int64_t n, double eps, float* out) {
#pragma omp parallel for if (tokens > 1)
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * n;
    // Sum of squares in double: the reference (transformers) does it in float32,
    // but the extra precision only moves results by float rounding.
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(row[i]) * row[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    float* o = out + t * n;
    for (int64_t i = 0; i < n; ++i) o[i] = row[i] * inv * weight[i];
  }
}

void apply_rope(float* x, int64_t tokens, int heads, int dim, const int64_t* positions, const float* inv_freq,
                bool interleaved) {
  const int half = dim / 2;
#pragma omp parallel for if (tokens > 1)
  for (int64_t t = 0; t < tokens; ++t) {
    // cos/sin once per token, shared by all heads; angle in float32 as transformers.
    float cos_table[1024], sin_table[1024];
    for (int i = 0; i < half && i < 1024; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      cos_table[i] = std::cos(angle);
      sin_table[i] = std::sin(angle);
    }
    for (int h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * dim;
      for (int i = 0; i < half; ++i) {
        const int a = interleaved ? 2 * i : i;
        const int b = interleaved ? 2 * i + 1 : i + half;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * cos_table[i] - x1 * sin_table[i];
        v[b] = x1 * cos_table[i] + x0 * sin_table[i];
      }
    }
  }
}

void silu_mul(float* gate, const float* up, int64_t n) {
#pragma omp parallel for if (n > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace podkv
