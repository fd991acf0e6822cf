// Layer-similarity matrices in tests of the analysis (pod/analyze.h): [KV head][layer][layer].
#pragma once

#include <gtest/gtest.h>

#include <vector>

namespace podkv::testing {

using Similarity = std::vector<std::vector<std::vector<double>>>;

inline void expect_similarity_near(const Similarity& got, const Similarity& want, double tolerance) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t h = 0; h < got.size(); ++h)
    for (size_t x = 0; x < got[h].size(); ++x)
      for (size_t y = 0; y < got[h].size(); ++y)
        EXPECT_NEAR(got[h][x][y], want[h][x][y], tolerance) << "KV head " << h << ", layers " << x << ", " << y;
}

}  // namespace podkv::testing
