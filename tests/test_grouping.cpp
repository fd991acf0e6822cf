// Offline layer grouping: Jensen-Shannon divergence, the greedy block rule and
// the similarity accumulator, against hand computations.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "pod/grouping.h"
#include "util/error.h"

namespace podkv {
namespace {

using Matrix = std::vector<std::vector<double>>;

double js(const std::vector<double>& p, const std::vector<double>& q) {
  EXPECT_EQ(p.size(), q.size());
  return js_divergence_log2(p.data(), q.data(), p.size());
}

std::vector<double> random_distribution(std::mt19937& rng, size_t n, double zero_chance) {
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<double> p(n);
  double sum = 0.0;
  for (double& v : p) {
    v = uniform(rng) < zero_chance ? 0.0 : uniform(rng);
    sum += v;
  }
  if (sum == 0.0) p[0] = sum = 1.0;
  for (double& v : p) v /= sum;
  return p;
}

TEST(JsDivergence, HandValues) {
  // p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4); KL(p||m) = log2(4/3);
  // KL(q||m) = 1/2 log2(2/3) + 1/2 log2 2; JS = 3/2 - 3/4 log2 3.
  EXPECT_NEAR(js({1, 0}, {0.5, 0.5}), 1.5 - 0.75 * std::log2(3.0), 1e-15);
  // Zeros on both sides: m = (1/2, 1/4, 1/4); each KL is 1/2.
  EXPECT_NEAR(js({0.5, 0.5, 0}, {0.5, 0, 0.5}), 0.5, 1e-15);
  EXPECT_EQ(js({0.2, 0.3, 0.5}, {0.2, 0.3, 0.5}), 0.0);
  EXPECT_EQ(js({1, 0, 0}, {1, 0, 0}), 0.0);
  EXPECT_EQ(js({1, 0}, {0, 1}), 1.0);
  EXPECT_EQ(js({0.5, 0.5, 0, 0}, {0, 0, 0.25, 0.75}), 1.0);
  EXPECT_EQ(js_divergence_log2(static_cast<const double*>(nullptr), nullptr, 0), 0.0);
}

TEST(JsDivergence, SymmetricBoundedAndFloatAgrees) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + trial % 37;
    std::vector<double> p = random_distribution(rng, n, 0.3);
    std::vector<double> q = random_distribution(rng, n, 0.3);
    const double d = js(p, q);
    EXPECT_EQ(d, js(q, p));
    EXPECT_GE(d, 0.0);
    EXPECT_LE(d, 1.0);
    std::vector<float> pf(p.begin(), p.end()), qf(q.begin(), q.end());
    EXPECT_NEAR(js_divergence_log2(pf.data(), qf.data(), n), d, 1e-6);
  }
}

// A symmetric matrix from its upper triangle, diagonal 1.
Matrix symmetric(int n, const std::vector<std::vector<double>>& upper) {
  Matrix m(n, std::vector<double>(n, 1.0));
  for (int x = 0; x < n; ++x)
    for (int y = x + 1; y < n; ++y) m[x][y] = m[y][x] = upper[x][y - x - 1];
  return m;
}

TEST(GreedyAnchors, HandMadeMatrices) {
  // 5 layers; upper[x] lists sim(x, x+1), sim(x, x+2), ...
  const Matrix sim = symmetric(5, {{0.9, 0.6, 0.4, 0.2}, {0.9, 0.5, 0.3}, {0.8, 0.55}, {0.7}});
  EXPECT_EQ(greedy_anchors(sim, 0.5, 0), (std::vector<int>{0, 3}));
  // 0.65: layer 2 leaves block 0 (0.6); block 2 takes 3 (0.8) but not 4 (0.55).
  EXPECT_EQ(greedy_anchors(sim, 0.65, 0), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(greedy_anchors(sim, 0.95, 0), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(greedy_anchors(sim, 0.2, 0), (std::vector<int>{0}));
  EXPECT_EQ(greedy_anchors(sim, 0.9, 0), (std::vector<int>{0, 2, 3, 4}));  // >= joins

  // The rule compares with the anchor, not the previous layer: 1 and 2 are
  // alike, 0 and 1 are alike, but 0 and 2 are not, so 2 starts a block.
  const Matrix chain = symmetric(3, {{0.9, 0.3}, {0.9}});
  EXPECT_EQ(greedy_anchors(chain, 0.5, 0), (std::vector<int>{0, 2}));

  // Only similarity[anchor][l] is read: an asymmetric matrix uses its upper side.
  Matrix asym = symmetric(3, {{0.9, 0.9}, {0.9}});
  asym[1][0] = asym[2][0] = 0.0;
  EXPECT_EQ(greedy_anchors(asym, 0.5, 0), (std::vector<int>{0}));

  EXPECT_EQ(greedy_anchors(Matrix{{1.0}}, 0.5, 0), (std::vector<int>{0}));
}

TEST(GreedyAnchors, CapAndExtremeDeltas) {
  const int n = 7;
  Matrix ones(n, std::vector<double>(n, 1.0));
  Matrix below_one(n, std::vector<double>(n, 0.999));
  for (int l = 0; l < n; ++l) below_one[l][l] = 1.0;

  EXPECT_EQ(greedy_anchors(ones, 0.0, 0), (std::vector<int>{0}));
  EXPECT_EQ(greedy_anchors(below_one, 0.0, 3), (std::vector<int>{0, 3, 6}));
  EXPECT_EQ(greedy_anchors(below_one, 0.0, 2), (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(greedy_anchors(below_one, 0.0, 7), (std::vector<int>{0}));
  EXPECT_EQ(greedy_anchors(below_one, 0.0, 1), (std::vector<int>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(greedy_anchors(below_one, 1.0, 0), (std::vector<int>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(greedy_anchors(ones, 1.0, 0), (std::vector<int>{0}));
  EXPECT_EQ(greedy_anchors(ones, 1.0, 4), (std::vector<int>{0, 4}));

  // The cap and the similarity interact: after a similarity break the count restarts.
  const Matrix sim = symmetric(
      6, {{0.9, 0.1, 0.1, 0.1, 0.1}, {0.1, 0.1, 0.1, 0.1}, {0.9, 0.9, 0.9}, {0.9, 0.9}, {0.9}});
  EXPECT_EQ(greedy_anchors(sim, 0.5, 2), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(greedy_anchors(sim, 0.5, 3), (std::vector<int>{0, 2, 5}));
}

TEST(GreedyAnchors, PerHeadAndErrors) {
  const Matrix a = symmetric(3, {{0.9, 0.9}, {0.9}});
  const Matrix b = symmetric(3, {{0.1, 0.1}, {0.9}});
  EXPECT_EQ(greedy_anchors_per_head({a, b}, 0.5, 0), (std::vector<std::vector<int>>{{0}, {0, 1}}));

  EXPECT_THROW(greedy_anchors(Matrix{}, 0.5, 0), Error);
  EXPECT_THROW(greedy_anchors(Matrix{{1.0, 0.5}, {0.5}}, 0.5, 0), Error);
  EXPECT_THROW(greedy_anchors(a, 0.5, -1), Error);
  EXPECT_THROW(greedy_anchors(a, std::nan(""), 0), Error);
}

const double kHalfVsPoint = 1.5 - 0.75 * std::log2(3.0);  // JS((1,0), (1/2,1/2))

TEST(SimilarityAccumulator, AllScopeByHand) {
  // 3 layers, 2 query heads sharing 1 KV head; one query at t = 1 (keys 0, 1).
  SimilarityAccumulator acc(3, 2, 1, SimilarityScope::All, 0, 1);
  acc.begin_sequence(2, 1);
  const float head0[3][2] = {{1, 0}, {0.5f, 0.5f}, {0, 1}};
  const float flat[2] = {0.5f, 0.5f};
  for (int l = 0; l < 3; ++l) {
    acc.feed(l, 0, 1, head0[l], 2);
    acc.feed(l, 1, 1, flat, 2);
  }
  EXPECT_EQ(acc.stored_floats(), 3u * 2u * 2u);
  acc.end_sequence();
  auto sim = acc.mean_similarity();
  ASSERT_EQ(sim.size(), 1u);
  // Head 1 always contributes 1; head 0 contributes 1 - JS.
  EXPECT_NEAR(sim[0][0][1], (1.0 - kHalfVsPoint + 1.0) / 2, 1e-7);
  EXPECT_NEAR(sim[0][1][2], (1.0 - kHalfVsPoint + 1.0) / 2, 1e-7);
  EXPECT_NEAR(sim[0][0][2], (0.0 + 1.0) / 2, 1e-7);
  for (int x = 0; x < 3; ++x) {
    EXPECT_EQ(sim[0][x][x], 1.0);
    for (int y = 0; y < 3; ++y) EXPECT_EQ(sim[0][x][y], sim[0][y][x]);
  }
  EXPECT_EQ(acc.samples(0, 0, 2), 2);
  EXPECT_EQ(acc.samples(0, 2, 0), 2);
  EXPECT_EQ(acc.sequences(), 1);
}

TEST(SimilarityAccumulator, DistantScopeRenormalises) {
  // ns = 1, nr = 1, query t = 3: sink {0}, recent {3}, distant {1, 2}.
  const float layers[3][4] = {
      {0.1f, 0.2f, 0.2f, 0.5f},  // distant (1/2, 1/2)
      {0.4f, 0.3f, 0.3f, 0.0f},  // distant (1/2, 1/2): differs only on proximal keys
      {0.0f, 0.6f, 0.0f, 0.4f},  // distant (1, 0)
  };
  SimilarityAccumulator distant(3, 1, 1, SimilarityScope::Distant, 1, 1);
  SimilarityAccumulator all(3, 1, 1, SimilarityScope::All, 1, 1);
  for (SimilarityAccumulator* acc : {&distant, &all}) {
    acc->begin_sequence(4, 1);
    for (int l = 0; l < 3; ++l) acc->feed(l, 0, 3, layers[l], 4);
    acc->end_sequence();
  }
  EXPECT_EQ(distant.stored_floats(), 3u * 2u);
  auto d = distant.mean_similarity()[0];
  EXPECT_NEAR(d[0][1], 1.0, 1e-7);
  EXPECT_NEAR(d[0][2], 1.0 - kHalfVsPoint, 1e-7);
  EXPECT_NEAR(d[1][2], 1.0 - kHalfVsPoint, 1e-7);

  auto a = all.mean_similarity()[0];
  for (int x = 0; x < 3; ++x)
    for (int y = x + 1; y < 3; ++y) {
      std::vector<double> p(layers[x], layers[x] + 4), q(layers[y], layers[y] + 4);
      EXPECT_NEAR(a[x][y], 1.0 - js(p, q), 1e-6) << x << "," << y;
    }
  EXPECT_LT(a[0][1], 0.9);
}

TEST(SimilarityAccumulator, GroupsQueryHeadsByKvHead) {
  // 4 query heads, 2 KV heads: heads 0, 1 -> KV 0; heads 2, 3 -> KV 1.
  SimilarityAccumulator acc(2, 4, 2, SimilarityScope::All, 0, 1);
  acc.begin_sequence(2, 1);
  const float point0[2] = {1, 0}, point1[2] = {0, 1};
  for (int i = 0; i < 4; ++i) {
    acc.feed(0, i, 1, point0, 2);
    acc.feed(1, i, 1, i == 0 ? point1 : point0, 2);  // only head 0 disagrees
  }
  acc.end_sequence();
  auto sim = acc.mean_similarity();
  EXPECT_NEAR(sim[0][0][1], 0.5, 1e-12);  // (0 + 1) / 2
  EXPECT_NEAR(sim[1][0][1], 1.0, 1e-12);
}

TEST(SimilarityAccumulator, SkipsQueriesWithoutDistantKeysOrMass) {
  // ns = 1, nr = 1, T = 4, q = 3: t = 1 has no distant key, t = 2 has {1}, t = 3 has {1, 2}.
  SimilarityAccumulator acc(3, 1, 1, SimilarityScope::Distant, 1, 1);
  acc.begin_sequence(4, 3);
  EXPECT_EQ(acc.stored_floats(), 3u * (0 + 1 + 2));
  const float uniform[4] = {0.25f, 0.25f, 0.25f, 0.25f};
  const float proximal_only[4] = {0.5f, 0.0f, 0.0f, 0.5f};
  const float point[4] = {0.0f, 1.0f, 0.0f, 0.0f};
  for (int t = 1; t <= 3; ++t) {
    acc.feed(0, 0, t, uniform, 4);
    acc.feed(1, 0, t, t == 3 ? proximal_only : uniform, 4);  // no distant mass at t = 3
    acc.feed(2, 0, t, t == 3 ? point : uniform, 4);
  }
  acc.end_sequence();
  // t = 2: one distant key, every layer renormalises to (1): similarity 1.
  // t = 3: layer 1 has no distant mass, so only pair (0, 2) counts:
  // (1/2, 1/2) vs (1, 0).
  EXPECT_EQ(acc.samples(0, 0, 1), 1);
  EXPECT_EQ(acc.samples(0, 1, 2), 1);
  EXPECT_EQ(acc.samples(0, 0, 2), 2);
  auto sim = acc.mean_similarity()[0];
  EXPECT_NEAR(sim[0][1], 1.0, 1e-7);
  EXPECT_NEAR(sim[1][2], 1.0, 1e-7);
  EXPECT_NEAR(sim[0][2], (1.0 + 1.0 - kHalfVsPoint) / 2, 1e-7);

  // A sequence too short for any distant key leaves pairs without samples.
  SimilarityAccumulator short_only(2, 1, 1, SimilarityScope::Distant, 1, 1);
  short_only.begin_sequence(2, 2);
  for (int l = 0; l < 2; ++l)
    for (int t = 0; t < 2; ++t) short_only.feed(l, 0, t, uniform, 2);
  short_only.end_sequence();
  EXPECT_EQ(short_only.samples(0, 0, 1), 0);
  EXPECT_THROW(short_only.mean_similarity(), Error);
}

TEST(SimilarityAccumulator, AveragesOverSequencesLikeBruteForce) {
  const int L = 4, Hq = 4, Hkv = 2, ns = 2, nr = 5;
  std::mt19937 rng(11);
  SimilarityAccumulator acc(L, Hq, Hkv, SimilarityScope::Distant, ns, nr);
  std::vector<double> sums(Hkv * L * L, 0.0);
  std::vector<int> counts(Hkv * L * L, 0);
  for (int T : {20, 13}) {
    const int q = 3;
    acc.begin_sequence(T, q);
    // probs[l][i][s][T], causal rows (zeros after t), fed one layer at a time.
    std::vector<std::vector<float>> probs(L, std::vector<float>(Hq * q * T, 0.0f));
    std::vector<std::vector<std::vector<double>>> distant(L,
                                                          std::vector<std::vector<double>>(Hq * q));
    for (int l = 0; l < L; ++l) {
      for (int i = 0; i < Hq; ++i)
        for (int s = 0; s < q; ++s) {
          const int t = T - q + s;
          std::vector<double> row = random_distribution(rng, t + 1, 0.2);
          double mass = 0.0;
          for (int j = 0; j <= t; ++j) {
            probs[l][(i * q + s) * T + j] = static_cast<float>(row[j]);
            if (j >= ns && j <= t - nr) {
              distant[l][i * q + s].push_back(static_cast<float>(row[j]));
              mass += static_cast<float>(row[j]);
            }
          }
          for (double& v : distant[l][i * q + s]) v /= mass;
        }
      acc.feed_layer(l, probs[l].data(), T);
    }
    acc.end_sequence();
    for (int x = 0; x < L; ++x)
      for (int y = x + 1; y < L; ++y)
        for (int i = 0; i < Hq; ++i)
          for (int s = 0; s < q; ++s) {
            const int h = i / (Hq / Hkv);
            sums[(h * L + x) * L + y] += 1.0 - js(distant[x][i * q + s], distant[y][i * q + s]);
            counts[(h * L + x) * L + y] += 1;
          }
  }
  auto sim = acc.mean_similarity();
  EXPECT_EQ(acc.sequences(), 2);
  for (int h = 0; h < Hkv; ++h)
    for (int x = 0; x < L; ++x)
      for (int y = x + 1; y < L; ++y) {
        EXPECT_EQ(acc.samples(h, x, y), counts[(h * L + x) * L + y]);
        EXPECT_NEAR(sim[h][x][y], sums[(h * L + x) * L + y] / counts[(h * L + x) * L + y], 1e-6);
      }
}

TEST(SimilarityAccumulator, MisuseThrows) {
  EXPECT_THROW(SimilarityAccumulator(0, 1, 1, SimilarityScope::All, 0, 1), Error);
  EXPECT_THROW(SimilarityAccumulator(2, 3, 2, SimilarityScope::All, 0, 1), Error);
  EXPECT_THROW(SimilarityAccumulator(2, 2, 0, SimilarityScope::All, 0, 1), Error);
  EXPECT_THROW(SimilarityAccumulator(2, 2, 1, SimilarityScope::Distant, -1, 1), Error);
  EXPECT_THROW(SimilarityAccumulator(2, 2, 1, SimilarityScope::Distant, 0, 0), Error);

  SimilarityAccumulator acc(2, 1, 1, SimilarityScope::All, 0, 1);
  const float row[3] = {0.2f, 0.3f, 0.5f};
  const float negative[3] = {0.5f, -0.1f, 0.6f};
  const float not_finite[3] = {0.5f, NAN, 0.5f};
  EXPECT_THROW(acc.feed(0, 0, 2, row, 3), Error);  // before begin_sequence
  EXPECT_THROW(acc.end_sequence(), Error);
  EXPECT_THROW(acc.begin_sequence(3, 4), Error);
  acc.begin_sequence(3, 1);
  EXPECT_THROW(acc.feed(0, 0, 1, row, 3), Error);  // not one of the last q positions
  EXPECT_THROW(acc.feed(2, 0, 2, row, 3), Error);  // layer out of range
  EXPECT_THROW(acc.feed(0, 1, 2, row, 3), Error);  // query head out of range
  EXPECT_THROW(acc.feed(0, 0, 2, row, 2), Error);  // too few keys
  EXPECT_THROW(acc.feed(0, 0, 2, negative, 3), Error);
  EXPECT_THROW(acc.feed(0, 0, 2, not_finite, 3), Error);
  acc.feed(0, 0, 2, row, 3);
  EXPECT_THROW(acc.feed(0, 0, 2, row, 3), Error);  // fed twice
  try {
    acc.end_sequence();
    FAIL() << "ended a sequence with layer 1 missing";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(acc.feed_layer(1, row, 2), Error);  // row_stride < seq_len
  acc.feed_layer(1, row, 3);
  acc.end_sequence();
  EXPECT_NEAR(acc.mean_similarity()[0][0][1], 1.0, 1e-12);
  EXPECT_THROW(acc.samples(1, 0, 1), Error);
}

TEST(SimilarityAccumulator, TotalsRestoreToTheSameMeans) {
  SimilarityAccumulator acc(3, 2, 1, SimilarityScope::All, 0, 1);
  const float rows[3][2][3] = {{{0.2f, 0.3f, 0.5f}, {1, 0, 0}},
                               {{0.5f, 0.5f, 0}, {0, 0, 1}},
                               {{0.2f, 0.3f, 0.5f}, {0.25f, 0.25f, 0.5f}}};
  acc.begin_sequence(3, 1);
  for (int l = 0; l < 3; ++l) acc.feed_layer(l, &rows[l][0][0], 3);
  acc.end_sequence();
  const SimilarityAccumulator::Totals totals = acc.totals();
  EXPECT_EQ(totals.sequences, 1);
  ASSERT_EQ(totals.sums.size(), 9u);

  SimilarityAccumulator restored(3, 2, 1, SimilarityScope::All, 0, 1);
  restored.begin_sequence(3, 1);  // a sequence in progress is discarded
  restored.restore_totals(totals);
  EXPECT_EQ(restored.sequences(), 1);
  EXPECT_EQ(restored.mean_similarity(), acc.mean_similarity());
  EXPECT_EQ(restored.samples(0, 0, 2), 2);
  EXPECT_THROW(restored.end_sequence(), Error);

  SimilarityAccumulator::Totals wrong = totals;
  wrong.sums.pop_back();
  EXPECT_THROW(restored.restore_totals(wrong), Error);  // another shape
  wrong = totals;
  wrong.sums[1] = 5.0;  // more than its count of similarities <= 1
  EXPECT_THROW(restored.restore_totals(wrong), Error);
}

}  // namespace
}  // namespace podkv
