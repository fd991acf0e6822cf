// Token selection in the KV cache (h2o, snapkv, pod+snapkv):
// - attention over what is kept equals the plain reference with every dropped
//   token masked (random data, GQA, chunked prefill then decode);
// - on hand-made attention patterns the kept tokens are exactly the ones the
//   definitions pick (heavy hitters; pooled observation-window scores; per
//   PoD block from the attention of all its layers);
// - pages held equal the analytic formula after every step of a long decode.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "ops/attention.h"
#include "policy/policies.h"
#include "kv_test_util.h"
#include "reference_attention.h"

namespace podkv {
namespace {

using testing::FullKv;

struct Geometry {
  int layers = 3, kv_heads = 2, heads = 4, dim = 8, positions = 60, page = 4;
};

ModelConfig model_config(const Geometry& g) { return testing::attention_geometry(g.layers, g.kv_heads, g.heads, g.dim); }

// Feeds K/V/Q [layer][position][heads][dim] through a cache chunk by chunk the
// way the Runner does (reserve, write, attention per layer, commit, end of the
// first call = end of prefill). `check` sees each chunk's outputs together
// with the kept positions per group as they were while the chunk ran.
using KeptSets = std::vector<std::vector<int64_t>>;  // [group] ascending
using CheckFn = std::function<void(int layer, int64_t start, int64_t n, const float* out, const KeptSets& kept,
                                   int64_t window_base)>;

using AfterCommitFn = std::function<void(const KvCache& cache, int seq, int64_t length)>;

struct CacheRun {
  std::unique_ptr<KvCache> cache;
  int seq = 0;
};

CacheRun run_cache(const Geometry& g, const KvLayout& layout, const FullKv& kv, const std::vector<float>& q,
              int64_t prefill, const std::vector<int>& later_chunks, const CheckFn& check = nullptr,
              const AfterCommitFn& after_commit = nullptr, size_t budget_bytes = 1 << 22) {
  CacheRun r;
  r.cache = std::make_unique<KvCache>(layout, budget_bytes, g.page);
  KvCache& cache = *r.cache;
  r.seq = cache.add_sequence();
  std::vector<std::vector<float>> gates(g.layers);
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.dim));
  std::vector<int64_t> calls = {prefill};
  for (int c : later_chunks) calls.push_back(c);
  int64_t start = 0;
  for (size_t call = 0; call < calls.size(); ++call) {
    const int64_t n = std::min<int64_t>(calls[call], g.positions - start);
    if (n <= 0) break;
    const bool is_prefill = call == 0;
    cache.check_fits(r.seq, start + n, n, is_prefill);
    cache.reserve(r.seq, start + n);
    KeptSets kept(layout.num_selection_groups);
    for (int grp = 0; grp < layout.num_selection_groups; ++grp) kept[grp] = cache.kept_positions(r.seq, grp);
    const int64_t window_base = cache.window_base(r.seq);
    for (int l = 0; l < g.layers; ++l) {
      for (int h = 0; h < g.kv_heads; ++h) {
        for (int64_t t = start; t < start + n; ++t) {
          if (layout.key_rule(l, h).retention != Retention::None)
            testing::write_key(cache, r.seq, l, h, t, kv.key(l, h, t));
          if (layout.value_rule(l, h).retention != Retention::None)
            testing::write_value(cache, r.seq, l, h, t, kv.value(l, h, t));
        }
      }
      testing::AttentionInput in;
      in.cache = &cache;
      in.seq = r.seq;
      in.layer = l;
      in.num_heads = g.heads;
      in.scale = scale;
      in.gates = &gates;
      if (layout.selection == Selection::HeavyHitters) in.score_from = 0;
      if (layout.selection == Selection::SnapKV && is_prefill) in.score_from = start + n - layout.observation_window;
      std::vector<float> out(n * g.heads * g.dim);
      testing::attention(in, &q[(static_cast<size_t>(l) * g.positions + start) * g.heads * g.dim], start, n, out.data());
      if (check) check(l, start, n, out.data(), kept, window_base);
    }
    cache.commit(r.seq, start + n);
    if (is_prefill) cache.end_prefill(r.seq);
    start += n;
    if (after_commit) after_commit(cache, r.seq, start);
  }
  return r;
}

FullKv random_kv(const Geometry& g, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  FullKv kv{g.layers, g.kv_heads, g.positions, g.dim, {}, {}};
  const size_t n = static_cast<size_t>(g.layers) * g.kv_heads * g.positions * g.dim;
  kv.k.resize(n);
  kv.v.resize(n);
  for (auto& x : kv.k) x = 2.0f * normal(rng);
  for (auto& x : kv.v) x = normal(rng);
  return kv;
}

std::vector<float> random_q(const Geometry& g, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(g.layers) * g.positions * g.heads * g.dim);
  for (auto& x : q) x = normal(rng);
  return q;
}

// The selection group of (layer, head): the group of its distant values.
int group_of(const KvLayout& layout, int l, int h) { return layout.distant_group(layout.value_rule(l, h), layout.values, h); }

TEST(KvSelection, AttentionEqualsReferenceWithDroppedTokensMasked) {
  Geometry g;
  const int sink = 2, recent = 6;
  for (const char* policy : {"h2o", "snapkv", "pod+snapkv"}) {
    for (uint64_t seed : {1, 2}) {
      std::mt19937_64 rng(seed);
      FullKv kv = random_kv(g, rng);
      std::vector<float> q = random_q(g, rng);
      KvPolicyOptions o;
      o.policy = policy;
      o.sink_tokens = sink;
      o.recent_tokens = recent;
      o.budget = 9;
      o.observation_window = 5;
      o.pool_kernel = 3;
      PodConfig pod;
      pod.sink_tokens = sink;
      pod.recent_tokens = recent;
      pod.anchors = {{0, 2}, {0}};  // head 0: blocks {0,1},{2}; head 1: {0,1,2}
      o.pod = pod;
      const KvLayout layout = make_kv_layout(model_config(g), o);
      PodLayout blocks(pod, g.layers, g.kv_heads);
      const bool pod_policy = std::string(policy) == "pod+snapkv";
      const float scale = 1.0f / std::sqrt(static_cast<float>(g.dim));
      double worst = 0;
      int64_t masked_seen = 0;
      auto check = [&](int l, int64_t start, int64_t n, const float* out, const KeptSets& kept, int64_t base) {
        for (int64_t t = start; t < start + n; ++t) {
          auto key_layer = [&](int layer, int h, int tq, int j) {
            const bool prox = j < sink || j > tq - recent;
            if (!prox && j < base) {
              const auto& set = kept[group_of(layout, layer, h)];
              if (!std::binary_search(set.begin(), set.end(), static_cast<int64_t>(j))) return -1;
            }
            return prox || !pod_policy ? layer : blocks.anchor(layer, h);
          };
          auto value_layer = [&](int layer, int h, int tq, int j) { return key_layer(layer, h, tq, j) < 0 ? -1 : layer; };
          for (int j = 0; j <= t; ++j) masked_seen += key_layer(l, 0, static_cast<int>(t), j) < 0;
          std::vector<float> ref(g.heads * g.dim);
          reference_attention(kv, l, static_cast<int>(t), &q[((static_cast<size_t>(l) * g.positions) + t) * g.heads * g.dim],
                              g.heads, scale, key_layer, value_layer, ref.data());
          double diff = 0, size = 0;
          for (int i = 0; i < g.heads * g.dim; ++i) {
            diff = std::max(diff, static_cast<double>(std::fabs(out[(t - start) * g.heads * g.dim + i] - ref[i])));
            size = std::max(size, static_cast<double>(std::fabs(ref[i])));
          }
          worst = std::max(worst, diff / size);
        }
      };
      run_cache(g, layout, kv, q, 23, {1, 1, 3, 1, 7, 1, 1, 10, 1, 1, 1, 5}, check);
      EXPECT_LT(worst, 1e-5) << policy << " seed " << seed;
      EXPECT_GT(masked_seen, 0) << policy << ": nothing was dropped, the test would not see a wrong mask";
    }
  }
}

// Keys that one query direction picks out: key j = strength[j] · e_axis, the
// others 0; every query = e_axis. Values random.
struct Pattern {
  Geometry g;
  FullKv kv;
  std::vector<float> q;
  Pattern(const Geometry& geometry, uint64_t seed) : g(geometry) {
    std::mt19937_64 rng(seed);
    kv = random_kv(g, rng);
    std::fill(kv.k.begin(), kv.k.end(), 0.0f);
    q.assign(static_cast<size_t>(g.layers) * g.positions * g.heads * g.dim, 0.0f);
  }
  void key(int l, int h, int j, int axis, float strength) { const_cast<float*>(kv.key(l, h, j))[axis] = strength; }
  void query_axis(int l, int axis, float strength) {
    for (int t = 0; t < g.positions; ++t)
      for (int i = 0; i < g.heads; ++i) q[((static_cast<size_t>(l) * g.positions + t) * g.heads + i) * g.dim + axis] = strength;
  }
};

TEST(KvSelection, H2oKeepsTheHeavyHitters) {
  Geometry g;
  g.layers = 2;
  g.positions = 80;
  Pattern p(g, 5);
  // Head 0 and head 1 of each layer have different heavy hitters, of
  // different strengths, and one weak one each. (H2O favours old tokens,
  // which have been attended by more queries: the strong ones are strong
  // enough to beat that within the ~9 queries of the window.)
  const std::map<int, float> heavy0 = {{5, 14}, {11, 13}, {23, 12}, {40, 11}, {41, 3}};
  const std::map<int, float> heavy1 = {{3, 14}, {30, 13}, {31, 12}, {50, 11}, {52, 3}};
  for (int l = 0; l < g.layers; ++l) {
    for (auto [j, s] : heavy0) p.key(l, 0, j, 0, s);
    for (auto [j, s] : heavy1) p.key(l, 1, j, 0, s);
    p.query_axis(l, 0, 1.0f);
  }
  KvPolicyOptions o;
  o.policy = "h2o";
  o.sink_tokens = 2;
  o.recent_tokens = 8;
  o.budget = 4;
  const KvLayout layout = make_kv_layout(model_config(g), o);
  CacheRun r = run_cache(g, layout, p.kv, p.q, 17, std::vector<int>(63, 1));
  // Distant now: [2, 72); the 4 strongest of each head stay, the weakest goes.
  for (int l = 0; l < g.layers; ++l) {
    EXPECT_EQ(r.cache->kept_positions(r.seq, l * 2 + 0), (std::vector<int64_t>{5, 11, 23, 40})) << "layer " << l;
    EXPECT_EQ(r.cache->kept_positions(r.seq, l * 2 + 1), (std::vector<int64_t>{3, 30, 31, 50})) << "layer " << l;
  }
}

TEST(KvSelection, SnapKvKeepsPooledObservationWindowChoice) {
  Geometry g;
  g.layers = 1;
  g.positions = 70;
  Pattern p(g, 6);
  // Head 0 attends to 10 and 30, head 1 to 20 and 45; pooling (width 3) keeps
  // their neighbours too: budget 6 = exactly the two peaks and their neighbours.
  for (int j : {10, 30}) p.key(0, 0, j, 0, 8);
  for (int j : {20, 45}) p.key(0, 1, j, 0, 8);
  p.query_axis(0, 0, 1.0f);
  KvPolicyOptions o;
  o.policy = "snapkv";
  o.sink_tokens = 2;
  o.recent_tokens = 8;
  o.budget = 6;
  o.observation_window = 4;
  o.pool_kernel = 3;
  const KvLayout layout = make_kv_layout(model_config(g), o);
  CacheRun r = run_cache(g, layout, p.kv, p.q, 60, {1, 1, 1, 1, 1});
  // Tokens that left the window after the prefill (52..56) are all kept.
  EXPECT_EQ(r.cache->kept_positions(r.seq, 0), (std::vector<int64_t>{9, 10, 11, 29, 30, 31, 52, 53, 54, 55, 56}));
  EXPECT_EQ(r.cache->kept_positions(r.seq, 1), (std::vector<int64_t>{19, 20, 21, 44, 45, 46, 52, 53, 54, 55, 56}));
}

TEST(KvSelection, PodSnapKvSelectsPerBlockFromAllItsLayers) {
  Geometry g;
  g.layers = 3;
  g.kv_heads = 1;
  g.heads = 2;
  g.positions = 60;
  Pattern p(g, 7);
  // One block {0, 1, 2}: the anchor's keys serve every layer's distant tokens.
  // Layer 0 looks along axis 0 (at 12 and 33), layer 1 along axis 1 (at 25),
  // layer 2 nowhere in particular: the block keeps all three.
  for (int j : {12, 33}) p.key(0, 0, j, 0, 8);
  p.key(0, 0, 25, 1, 8);
  p.query_axis(0, 0, 1.0f);
  p.query_axis(1, 1, 1.0f);
  PodConfig pod;
  pod.sink_tokens = 2;
  pod.recent_tokens = 8;
  pod.anchors = {{0}};
  KvPolicyOptions o;
  o.policy = "pod+snapkv";
  o.pod = pod;
  o.budget = 3;
  o.observation_window = 4;
  o.pool_kernel = 1;
  const KvLayout layout = make_kv_layout(model_config(g), o);
  ASSERT_EQ(layout.num_selection_groups, 1);
  CacheRun r = run_cache(g, layout, p.kv, p.q, 60, {});
  EXPECT_EQ(r.cache->kept_positions(r.seq, 0), (std::vector<int64_t>{12, 25, 33}));
  // Anchor keys and the values of all three layers keep 3 distant tokens; the
  // non-anchor keys only their windows.
  const int64_t window = layout.window_tokens(60);
  EXPECT_EQ(layout.retained_tokens(layout.key_rule(0, 0), 60), window + 3);
  EXPECT_EQ(layout.retained_tokens(layout.key_rule(1, 0), 60), window);
  EXPECT_EQ(layout.retained_tokens(layout.value_rule(2, 0), 60), window + 3);
}

// h2o, snapkv or pod+snapkv with sink 3, recent 10, observation window 6 and
// uniform PoD blocks of `pod_group` layers.
KvLayout selection_layout(const Geometry& g, const char* policy, int64_t budget, int pod_group) {
  KvPolicyOptions o;
  o.policy = policy;
  o.sink_tokens = 3;
  o.recent_tokens = 10;
  o.budget = budget;
  o.observation_window = 6;
  o.pod = uniform_pod_config(g.layers, g.kv_heads, pod_group, 3, 10);
  return make_kv_layout(model_config(g), o);
}

TEST(KvSelection, PagesHeldEqualTheFormulaAtEveryStep) {
  Geometry g;
  g.positions = 120;
  std::mt19937_64 rng(3);
  FullKv kv = random_kv(g, rng);
  std::vector<float> q = random_q(g, rng);
  for (const char* policy : {"h2o", "snapkv", "pod+snapkv"}) {
    const KvLayout layout = selection_layout(g, policy, /*budget=*/7, /*pod_group=*/2);
    int steps = 0;
    // A 37-token prefill, then one token at a time; checked after every commit.
    auto after = [&](const KvCache& cache, int seq, int64_t length) {
      ++steps;
      const int64_t held = static_cast<int64_t>(cache.bytes_reserved(seq) / cache.page_bytes());
      EXPECT_EQ(held, cache.held_pages(length, 37)) << policy << " at " << length;
      EXPECT_EQ(cache.bytes_in_use(seq), static_cast<size_t>(layout.retained_vectors(length, 37)) * g.dim * sizeof(float))
          << policy << " at " << length;
      for (int grp = 0; grp < layout.num_selection_groups; ++grp)
        ASSERT_EQ(static_cast<int64_t>(cache.kept_positions(seq, grp).size()), layout.selected_tokens(length, 37))
            << policy << " group " << grp << " at " << length;
    };
    run_cache(g, layout, kv, q, 37, std::vector<int>(g.positions - 37, 1), nullptr, after);
    EXPECT_EQ(steps, g.positions - 37 + 1);
    // Distant tokens beyond the budget were really dropped.
    EXPECT_LT(layout.retained_vectors(g.positions, 37), KvLayout::dense(g.layers, g.kv_heads, g.dim).retained_vectors(g.positions));
  }
}

TEST(KvSelection, PeakPagesAreExactlyWhatARunNeeds) {
  // A 50-token prefill in one call, then 40 decode steps: a cache of exactly
  // the analytic peak runs it, one page less is refused with KvCacheFull.
  Geometry g;
  g.positions = 90;
  std::mt19937_64 rng(4);
  FullKv kv = random_kv(g, rng);
  std::vector<float> q = random_q(g, rng);
  for (const char* policy : {"h2o", "snapkv", "pod+snapkv"}) {
    const KvLayout layout = selection_layout(g, policy, /*budget=*/5, /*pod_group=*/3);
    KvCache probe(layout, 0, g.page);
    const int64_t peak = std::max(probe.peak_pages(0, 50, 50, 50), probe.peak_pages(50, 90, 1, 50));
    const std::vector<int> decode(40, 1);
    EXPECT_NO_THROW(run_cache(g, layout, kv, q, 50, decode, nullptr, nullptr, peak * probe.page_bytes())) << policy;
    EXPECT_THROW(run_cache(g, layout, kv, q, 50, decode, nullptr, nullptr, (peak - 1) * probe.page_bytes()), KvCacheFull)
        << policy;
  }
}

TEST(KvSelection, BadOptionsAreRefused) {
  Geometry g;
  KvPolicyOptions o;
  o.policy = "h2o";
  o.budget = -1;
  EXPECT_THROW(make_kv_layout(model_config(g), o), Error);
  o.policy = "snapkv";
  o.budget = 4;
  o.pool_kernel = 4;
  EXPECT_THROW(make_kv_layout(model_config(g), o), Error);
  o.pool_kernel = 3;
  o.recent_tokens = 0;
  EXPECT_THROW(make_kv_layout(model_config(g), o), Error);
  o.policy = "pod+snapkv";
  o.recent_tokens = 4;
  EXPECT_THROW(make_kv_layout(model_config(g), o), Error);  // no grouping
}

}  // namespace
}  // namespace podkv
