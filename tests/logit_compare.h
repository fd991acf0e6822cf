// Comparing logits against a reference: the tests' two measures, in one place.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace podkv::testutil {

// max |a - ref| over max |ref|; infinite where a has a NaN or an infinity (std::max would pass over a
// NaN difference).
inline double relative_error(const float* a, const float* ref, size_t n) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(a[i]) - ref[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
  }
  return max_diff / max_ref;
}

// Positions of [positions, vocab] logits whose argmax (the first, on ties) is the reference's.
inline int64_t same_argmax(const float* a, const float* ref, int64_t positions, int64_t vocab) {
  int64_t same = 0;
  for (int64_t t = 0; t < positions; ++t) {
    const float* x = a + t * vocab;
    const float* y = ref + t * vocab;
    same += std::max_element(x, x + vocab) - x == std::max_element(y, y + vocab) - y;
  }
  return same;
}

}  // namespace podkv::testutil
