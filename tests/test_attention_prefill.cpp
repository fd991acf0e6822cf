// The blocked (prefill) attention kernel against the per-query kernel, which
// is the definition: the same random K/V/Q go through two caches chunk by
// chunk, one forcing the blocked kernel for every chunk (blocked_min_queries
// = 1), one forcing per-query (INT64_MAX). Outputs and gates must agree to
// 1e-5 relative, and so must the selection scores each chunk adds (scored
// queries run blocked too); the PoD stats and the kept positions after every
// commit must be equal. Sweeps page
// sizes 1, 4, 16; chunks of 1, 17, 64, 100; MHA, GQA, MQA; head_dim 8, 20, 64
// (20: not a multiple of the vector width); every policy, tau, share_values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "ops/attention.h"
#include "policy/policies.h"
#include "kv_test_util.h"
#include "reference_attention.h"

namespace podkv {
namespace {

struct Shape {
  int layers = 4, kv_heads = 2, heads = 6, dim = 8, page = 4;
};

ModelConfig model_config(const Shape& s) { return testing::attention_geometry(s.layers, s.kv_heads, s.heads, s.dim); }

// One cache fed chunk by chunk as the Runner does; `blocked_min` picks the kernel.
struct Feed {
  std::unique_ptr<KvCache> cache;
  int seq = 0;
  std::vector<std::vector<float>> gates;
  AttentionStats stats;
};

struct Comparison {
  double max_out_err = 0, max_gate_err = 0, max_score_err = 0;
  bool stats_equal = true, selection_equal = true;
  int64_t blocked_queries = 0;  // unscored queries (all run blocked in the first feed)
  int64_t scored_queries = 0;   // scored queries (likewise blocked in the first feed)
};

// The selection scores of every group after a chunk ending at `end`: the store's, then the window's.
std::vector<std::vector<float>> all_scores(KvCache& cache, int seq, int groups, int64_t end) {
  std::vector<std::vector<float>> scores;
  for (int g = 0; g < groups; ++g) {
    std::vector<float> v = cache.store_scores(seq, g);
    const std::vector<float>& window = cache.window_scores(seq, g);
    const int64_t base = cache.window_base(seq);
    if (end > base) v.insert(v.end(), window.begin(), window.begin() + (end - base));
    scores.push_back(std::move(v));
  }
  return scores;
}

// K, V: [layer][position][kv_head][dim]; Q: [layer][position][heads][dim].
Comparison compare(const Shape& s, const KvLayout& layout, const std::vector<int>& chunks, int prefill_chunks,
                   std::optional<float> tau, uint64_t seed) {
  int64_t positions = 0;
  for (int c : chunks) positions += c;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> k(static_cast<size_t>(s.layers) * positions * s.kv_heads * s.dim), v(k.size());
  std::vector<float> q(static_cast<size_t>(s.layers) * positions * s.heads * s.dim);
  for (auto& x : k) x = 2.0f * normal(rng);  // peaky, so that distant keys matter and gates vary
  for (auto& x : v) x = normal(rng);
  for (auto& x : q) x = normal(rng);
  int64_t prefill = 0;
  for (int i = 0; i < prefill_chunks; ++i) prefill += chunks[i];

  Feed feeds[2];
  for (Feed& f : feeds) {
    f.cache = std::make_unique<KvCache>(layout, size_t{1} << 24, s.page);
    f.seq = f.cache->add_sequence();
    f.gates.resize(s.layers);
  }
  Comparison cmp;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.dim));
  int64_t start = 0;
  for (size_t call = 0; call < chunks.size(); ++call) {
    const int64_t n = chunks[call];
    const bool is_prefill = static_cast<int>(call) < prefill_chunks;
    int64_t score_from = INT64_MAX;
    if (layout.selection == Selection::HeavyHitters) score_from = 0;
    if (layout.selection == Selection::SnapKV && is_prefill) score_from = prefill - layout.observation_window;
    if (score_from > start) cmp.blocked_queries += std::min(n, score_from - start) * s.layers;
    cmp.scored_queries += std::clamp<int64_t>(start + n - score_from, 0, n) * s.layers;
    std::vector<float> out[2];
    std::vector<std::vector<float>> scores[2];
    for (int f = 0; f < 2; ++f) {
      KvCache& cache = *feeds[f].cache;
      const int seq = feeds[f].seq;
      cache.reserve(seq, start + n);
      out[f].resize(static_cast<size_t>(n) * s.layers * s.heads * s.dim);
      for (int l = 0; l < s.layers; ++l) {
        for (int h = 0; h < s.kv_heads; ++h) {
          for (int64_t t = start; t < start + n; ++t) {
            const size_t at = ((static_cast<size_t>(l) * positions + t) * s.kv_heads + h) * s.dim;
            if (layout.key_rule(l, h).retention != Retention::None)
              testing::write_key(cache, seq, l, h, t, &k[at]);
            if (layout.value_rule(l, h).retention != Retention::None)
              testing::write_value(cache, seq, l, h, t, &v[at]);
          }
        }
        testing::AttentionInput in;
        in.cache = &cache;
        in.seq = seq;
        in.layer = l;
        in.num_heads = s.heads;
        in.scale = scale;
        in.tau = tau;
        in.gates = &feeds[f].gates;
        in.score_from = score_from;
        in.blocked_min_queries = f == 0 ? 1 : INT64_MAX;
        testing::attention(in, &q[(static_cast<size_t>(l) * positions + start) * s.heads * s.dim], start, n,
                  &out[f][static_cast<size_t>(l) * n * s.heads * s.dim], &feeds[f].stats);
      }
      scores[f] = all_scores(cache, seq, layout.num_selection_groups, start + n);
      cache.commit(seq, start + n);
      if (is_prefill && static_cast<int>(call) == prefill_chunks - 1) cache.end_prefill(seq);
    }
    double diff = 0, size = 0;
    for (size_t i = 0; i < out[0].size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::fabs(out[0][i] - out[1][i])));
      size = std::max(size, static_cast<double>(std::fabs(out[1][i])));
    }
    cmp.max_out_err = std::max(cmp.max_out_err, diff / size);
    for (int l = 0; l < s.layers; ++l)
      for (size_t i = 0; i < feeds[1].gates[l].size(); ++i)
        cmp.max_gate_err = std::max(cmp.max_gate_err,
                                    static_cast<double>(std::fabs(feeds[0].gates[l][i] - feeds[1].gates[l][i])));
    for (int g = 0; g < layout.num_selection_groups; ++g) {
      const std::vector<float>&a = scores[0][g], &b = scores[1][g];
      if (a.size() != b.size()) {
        cmp.max_score_err = 1;
        continue;
      }
      double diff = 0, size = 1e-30;
      for (size_t i = 0; i < a.size(); ++i) {
        diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
        size = std::max(size, static_cast<double>(std::fabs(b[i])));
      }
      cmp.max_score_err = std::max(cmp.max_score_err, diff / size);
      cmp.selection_equal = cmp.selection_equal && feeds[0].cache->kept_positions(feeds[0].seq, g) ==
                                                       feeds[1].cache->kept_positions(feeds[1].seq, g);
    }
    start += n;
  }
  cmp.stats_equal = feeds[0].stats.distant_parts == feeds[1].stats.distant_parts &&
                    feeds[0].stats.skipped_distant_parts == feeds[1].stats.skipped_distant_parts;
  for (int g = 0; g < layout.num_selection_groups; ++g)
    cmp.selection_equal = cmp.selection_equal && feeds[0].cache->kept_positions(feeds[0].seq, g) ==
                                                     feeds[1].cache->kept_positions(feeds[1].seq, g);
  return cmp;
}

// Random head-wise PoD blocks: layer l > 0 starts a block with probability 1/2.
PodConfig random_pod(const Shape& s, int sink, int recent, uint64_t seed) {
  std::mt19937_64 rng(seed);
  PodConfig pod;
  pod.sink_tokens = sink;
  pod.recent_tokens = recent;
  for (int h = 0; h < s.kv_heads; ++h) {
    std::vector<int> anchors = {0};
    for (int l = 1; l < s.layers; ++l)
      if (rng() % 2 == 0) anchors.push_back(l);
    pod.anchors.push_back(anchors);
  }
  return pod;
}

KvLayout layout_for(const Shape& s, const std::string& policy, int sink, int recent, uint64_t seed) {
  KvPolicyOptions o;
  o.policy = policy;
  o.sink_tokens = sink;
  o.recent_tokens = recent;
  o.budget = 11;
  o.observation_window = 9;
  o.pool_kernel = 3;
  if (policy == "pod" || policy == "pod+snapkv") o.pod = random_pod(s, sink, recent, seed);
  return make_kv_layout(model_config(s), o);
}

const std::vector<std::vector<int>> kChunkPatterns = {{1, 17, 64, 100}, {100, 1, 17, 64}, {64, 17, 1, 1, 33}};

void expect_same(const Comparison& c, const std::string& what) {
  EXPECT_LT(c.max_out_err, 1e-5) << what;
  EXPECT_LT(c.max_gate_err, 1e-5) << what;
  EXPECT_LT(c.max_score_err, 1e-5) << what;
  EXPECT_TRUE(c.stats_equal) << what;
  EXPECT_TRUE(c.selection_equal) << what;
}

TEST(AttentionPrefill, BlockedEqualsPerQueryOverShapesAndPages) {
  const Shape shapes[] = {
      {4, 2, 6, 8, 4},    // GQA, G = 3
      {3, 1, 4, 20, 1},   // MQA, head_dim not a multiple of the vector width
      {3, 3, 3, 64, 16},  // MHA, head_dim 64
      {2, 2, 16, 16, 4},  // GQA, G = 8
  };
  uint64_t seed = 1;
  for (const Shape& s : shapes) {
    for (int page : {1, 4, 16}) {
      Shape sp = s;
      sp.page = page;
      for (const auto& chunks : kChunkPatterns) {
        for (const char* policy : {"dense", "pod", "streaming", "cla"}) {
          const KvLayout layout = layout_for(sp, policy, 3, 20, seed);
          const std::string what = std::string(policy) + " dim " + std::to_string(s.dim) + " heads " +
                                   std::to_string(s.heads) + "/" + std::to_string(s.kv_heads) + " page " +
                                   std::to_string(page) + " first chunk " + std::to_string(chunks[0]);
          expect_same(compare(sp, layout, chunks, static_cast<int>(chunks.size()), std::nullopt, seed++), what);
        }
      }
    }
  }
}

TEST(AttentionPrefill, PodWindowsTauAndSharedValues) {
  Shape s;
  uint64_t seed = 100;
  // Windows: none before the chunk ends, one token, wider than everything; sink 0.
  for (auto [sink, recent] : {std::pair{0, 1}, std::pair{3, 1}, std::pair{2, 7}, std::pair{4, 500}, std::pair{0, 40}}) {
    for (std::optional<float> tau : {std::optional<float>{}, std::optional<float>{0.5f}, std::optional<float>{0.0f}}) {
      for (bool share_values : {false, true}) {
        PodConfig pod = random_pod(s, sink, recent, seed);
        pod.share_values = share_values;
        const KvLayout layout = pod_kv_layout(model_config(s), pod);
        const Comparison c = compare(s, layout, {64, 17, 100, 1, 3}, 5, tau, seed++);
        expect_same(c, "sink " + std::to_string(sink) + " recent " + std::to_string(recent) + " tau " +
                           (tau ? std::to_string(*tau) : "none") + " share_values " + std::to_string(share_values));
      }
    }
  }
}

TEST(AttentionPrefill, SelectionPoliciesChunkedPrefill) {
  uint64_t seed = 200;
  for (const char* policy : {"h2o", "snapkv", "pod+snapkv"}) {
    for (int page : {1, 4, 16}) {
      for (const auto& chunks : kChunkPatterns) {
        Shape s;
        s.page = page;
        const KvLayout layout = layout_for(s, policy, 2, 12, seed);
        // All but the last chunk are prefill; the last is decode-like.
        const Comparison c = compare(s, layout, chunks, static_cast<int>(chunks.size()) - 1, std::nullopt, seed++);
        const std::string what = std::string(policy) + " page " + std::to_string(page) + " first chunk " +
                                 std::to_string(chunks[0]);
        expect_same(c, what);
        if (std::string(policy) != "h2o") {
          EXPECT_GT(c.blocked_queries, 0) << what;
        }
        EXPECT_GT(c.scored_queries, 0) << what;
      }
    }
  }
}

}  // namespace
}  // namespace podkv
