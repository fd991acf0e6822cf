// rms_norm, apply_rope and silu_mul against plain double-precision references,
// on sizes with vector tails, one token and many (the parallel path), and RoPE's
// per-thread cos/sin tables when the position or the frequencies change.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "ops/elementwise.h"

namespace podkv {
namespace {

std::vector<float> random_vec(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

TEST(Elementwise, SiluMulMatchesReference) {
  for (int64_t n : {1, 17, 100, 4096 + 33, 70000}) {
    auto gate = random_vec(static_cast<size_t>(n), 30.0f, 1);
    const auto up = random_vec(static_cast<size_t>(n), 2.0f, 2);
    gate[0] = n > 1 ? -120.0f : 0.0f;  // exp(-g) past float's range
    const auto g0 = gate;
    silu_mul(gate.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double ref = g0[i] / (1.0 + std::exp(-static_cast<double>(g0[i]))) * up[i];
      EXPECT_NEAR(gate[i], ref, 1e-6 * std::fabs(ref) + 1e-30) << "n=" << n << " i=" << i;
    }
  }
}

TEST(Elementwise, RmsNormMatchesReference) {
  for (int64_t tokens : {1, 3, 200}) {
    for (int64_t n : {1, 31, 768}) {
      const auto x = random_vec(static_cast<size_t>(tokens * n), 3.0f, 3);
      const auto w = random_vec(static_cast<size_t>(n), 1.5f, 4);
      std::vector<float> out(x.size());
      rms_norm(x.data(), w.data(), tokens, n, 1e-5, out.data());
      for (int64_t t = 0; t < tokens; ++t) {
        double ss = 0;
        for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[t * n + i]) * x[t * n + i];
        const double inv = 1.0 / std::sqrt(ss / n + 1e-5);
        for (int64_t i = 0; i < n; ++i)
          EXPECT_NEAR(out[t * n + i], x[t * n + i] * inv * w[i], 1e-5 * std::fabs(x[t * n + i] * inv * w[i]) + 1e-7);
      }
    }
  }
}

// HF rotate-half RoPE of one head in double (angle rounded to float as transformers).
void rope_reference(float* v, int dim, int64_t pos, const std::vector<float>& inv_freq) {
  const int half = dim / 2;
  for (int i = 0; i < half; ++i) {
    const double angle = static_cast<float>(pos) * inv_freq[i];
    const double x0 = v[i], x1 = v[i + half];
    v[i] = static_cast<float>(x0 * std::cos(angle) - x1 * std::sin(angle));
    v[i + half] = static_cast<float>(x1 * std::cos(angle) + x0 * std::sin(angle));
  }
}

TEST(Elementwise, RopeTablesFollowPositionAndFrequencies) {
  const int heads = 3, dim = 64;
  std::vector<float> freq_a(dim / 2), freq_b(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    freq_a[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / dim));
    freq_b[i] = static_cast<float>(std::pow(500000.0, -2.0 * i / dim));
  }
  // Same position twice, then another position, then other frequencies at the
  // same position, then a batch of many tokens (parallel path).
  const std::vector<std::pair<std::vector<int64_t>, const std::vector<float>*>> calls = {
      {{7}, &freq_a}, {{7}, &freq_a}, {{9}, &freq_a}, {{9}, &freq_b}, {std::vector<int64_t>(400, 0), &freq_a}};
  for (size_t c = 0; c < calls.size(); ++c) {
    auto positions = calls[c].first;
    for (size_t t = 0; t < positions.size(); ++t) positions[t] += static_cast<int64_t>(t);
    const int64_t tokens = static_cast<int64_t>(positions.size());
    auto x = random_vec(static_cast<size_t>(tokens * heads * dim), 1.0f, 5 + static_cast<uint32_t>(c));
    auto ref = x;
    apply_rope(x.data(), tokens, heads, dim, positions.data(), calls[c].second->data(), false);
    for (int64_t t = 0; t < tokens; ++t)
      for (int h = 0; h < heads; ++h) rope_reference(ref.data() + (t * heads + h) * dim, dim, positions[t], *calls[c].second);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], ref[i], 1e-5) << "call " << c << " i=" << i;
  }
}

}  // namespace
}  // namespace podkv
