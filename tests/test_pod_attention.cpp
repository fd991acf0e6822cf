// PoD attention on the paged cache against the plain reference of
// reference_attention.h: random GQA geometry, random head-wise blocks, prompts
// several windows long, chunked prefill then decode; and the invariants
// (one-layer blocks and an all-covering window equal dense, streaming equals
// the sink+window mask, tau = 1 never skips, tau = 0 is proximal-only).
#include <gtest/gtest.h>

#include <random>

#include "ops/attention.h"
#include "policy/policies.h"
#include "kv_test_util.h"
#include "reference_attention.h"

namespace podkv {
namespace {

using testing::FullKv;
using testing::SourceFn;

struct PodCase {
  int layers = 5, kv_heads = 2, heads = 4, dim = 8, positions = 70;
  int page = 4;
  std::vector<int> chunks = {13, 1, 1, 20, 2, 1, 9, 1, 1, 22};
};

struct PodCaseResult {
  double max_rel_err = 0;
  AttentionStats stats;
};

// Feeds the random K/V/Q of `kv` and `q` [layer][position][heads][dim] through
// a cache with `layout` chunk by chunk, comparing every output with the reference.
PodCaseResult run_case(const PodCase& c, const KvLayout& layout, const FullKv& kv, const std::vector<float>& q,
             const SourceFn& key_layer, const SourceFn& value_layer, std::optional<float> tau = std::nullopt) {
  KvCache cache(layout, 1 << 22, c.page);
  const int seq = cache.add_sequence();
  std::vector<std::vector<float>> gates(c.layers);
  PodCaseResult run;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  int64_t start = 0;
  for (int chunk : c.chunks) {
    const int64_t n = std::min<int64_t>(chunk, c.positions - start);
    if (n <= 0) break;
    cache.reserve(seq, start + n);
    for (int l = 0; l < c.layers; ++l) {
      for (int h = 0; h < c.kv_heads; ++h) {
        for (int64_t t = start; t < start + n; ++t) {
          if (layout.key_rule(l, h).retention != Retention::None)
            testing::write_key(cache, seq, l, h, t, kv.key(l, h, t));
          if (layout.value_rule(l, h).retention != Retention::None)
            testing::write_value(cache, seq, l, h, t, kv.value(l, h, t));
        }
      }
      testing::AttentionInput in;
      in.cache = &cache;
      in.seq = seq;
      in.layer = l;
      in.num_heads = c.heads;
      in.scale = scale;
      in.tau = tau;
      in.gates = &gates;
      std::vector<float> out(n * c.heads * c.dim);
      const float* q_chunk = &q[((static_cast<size_t>(l) * c.positions) + start) * c.heads * c.dim];
      testing::attention(in, q_chunk, start, n, out.data(), &run.stats);
      std::vector<float> ref(c.heads * c.dim);
      for (int64_t t = 0; t < n; ++t) {
        reference_attention(kv, l, static_cast<int>(start + t), q_chunk + t * c.heads * c.dim, c.heads, scale,
                            key_layer, value_layer, ref.data());
        double max_diff = 0, max_ref = 0;
        for (int i = 0; i < c.heads * c.dim; ++i) {
          max_diff = std::max(max_diff, static_cast<double>(std::fabs(out[t * c.heads * c.dim + i] - ref[i])));
          max_ref = std::max(max_ref, static_cast<double>(std::fabs(ref[i])));
        }
        run.max_rel_err = std::max(run.max_rel_err, max_diff / max_ref);
      }
    }
    cache.commit(seq, start + n);
    start += n;
  }
  return run;
}

struct Inputs {
  FullKv kv;
  std::vector<float> q;
};

Inputs random_inputs(const PodCase& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Inputs in;
  in.kv = FullKv{c.layers, c.kv_heads, c.positions, c.dim, {}, {}};
  const size_t n = static_cast<size_t>(c.layers) * c.kv_heads * c.positions * c.dim;
  in.kv.k.resize(n);
  in.kv.v.resize(n);
  for (auto& x : in.kv.k) x = 2.0f * normal(rng);  // peaky enough that distant keys matter
  for (auto& x : in.kv.v) x = normal(rng);
  in.q.resize(static_cast<size_t>(c.layers) * c.positions * c.heads * c.dim);
  for (auto& x : in.q) x = normal(rng);
  return in;
}

ModelConfig geometry(const PodCase& c) { return testing::attention_geometry(c.layers, c.kv_heads, c.heads, c.dim); }

bool proximal(int t, int j, int sink, int recent) { return j < sink || j > t - recent; }

TEST(PodAttention, MatchesPlainReferenceWithRandomHeadwiseBlocks) {
  for (uint64_t seed : {1, 2, 3}) {
    PodCase c;
    std::mt19937_64 rng(seed * 77);
    PodConfig pod;
    pod.sink_tokens = 3;
    pod.recent_tokens = 7;
    for (int h = 0; h < c.kv_heads; ++h) {
      std::vector<int> anchors = {0};
      for (int l = 1; l < c.layers; ++l) if (rng() % 3 == 0) anchors.push_back(l);
      pod.anchors.push_back(anchors);
    }
    for (bool share_values : {false, true}) {
      pod.share_values = share_values;
      PodLayout blocks(pod, c.layers, c.kv_heads);
      Inputs in = random_inputs(c, seed);
      auto key_layer = [&](int l, int h, int t, int j) { return proximal(t, j, 3, 7) ? l : blocks.anchor(l, h); };
      auto value_layer = [&](int l, int h, int t, int j) {
        return share_values && !proximal(t, j, 3, 7) ? blocks.anchor(l, h) : l;
      };
      PodCaseResult r = run_case(c, pod_kv_layout(geometry(c), pod), in.kv, in.q, key_layer, value_layer);
      EXPECT_LT(r.max_rel_err, 1e-5) << "seed " << seed << " share_values " << share_values;
    }
  }
}

TEST(PodAttention, OneLayerBlocksAndFullWindowEqualDense) {
  PodCase c;
  Inputs in = random_inputs(c, 9);
  auto own = [](int l, int, int, int) { return l; };
  PodConfig dense_pod = uniform_pod_config(c.layers, c.kv_heads, 1, 2, 5);
  EXPECT_LT(run_case(c, pod_kv_layout(geometry(c), dense_pod), in.kv, in.q, own, own).max_rel_err, 1e-5);
  PodConfig wide = uniform_pod_config(c.layers, c.kv_heads, 3, 4, c.positions);
  EXPECT_LT(run_case(c, pod_kv_layout(geometry(c), wide), in.kv, in.q, own, own).max_rel_err, 1e-5);
  EXPECT_LT(run_case(c, KvLayout::dense(c.layers, c.kv_heads, c.dim), in.kv, in.q, own, own).max_rel_err, 1e-5);
}

TEST(PodAttention, StreamingEqualsSinkWindowMask) {
  PodCase c;
  Inputs in = random_inputs(c, 11);
  KvPolicyOptions o;
  o.policy = "streaming";
  o.sink_tokens = 4;
  o.recent_tokens = 9;
  auto masked = [](int l, int, int t, int j) { return proximal(t, j, 4, 9) ? l : -1; };
  EXPECT_LT(run_case(c, make_kv_layout(geometry(c), o), in.kv, in.q, masked, masked).max_rel_err, 1e-5);
}

TEST(PodAttention, ClaSharesKeysAndValuesOfLayerPairs) {
  PodCase c;
  Inputs in = random_inputs(c, 12);
  KvPolicyOptions o;
  o.policy = "cla";
  auto pair = [](int l, int, int, int) { return l - l % 2; };
  EXPECT_LT(run_case(c, make_kv_layout(geometry(c), o), in.kv, in.q, pair, pair).max_rel_err, 1e-5);
}

TEST(PodAttention, TauOneNeverSkipsTauZeroIsProximalOnly) {
  PodCase c;
  Inputs in = random_inputs(c, 13);
  PodConfig pod = uniform_pod_config(c.layers, c.kv_heads, 2, 3, 7);
  PodLayout blocks(pod, c.layers, c.kv_heads);
  const KvLayout layout = pod_kv_layout(geometry(c), pod);
  auto key_layer = [&](int l, int h, int t, int j) { return proximal(t, j, 3, 7) ? l : blocks.anchor(l, h); };
  auto own = [](int l, int, int, int) { return l; };
  PodCaseResult never = run_case(c, layout, in.kv, in.q, key_layer, own, 1.0f);
  EXPECT_LT(never.max_rel_err, 1e-5);
  EXPECT_GT(never.stats.distant_parts, 0);
  EXPECT_EQ(never.stats.skipped_distant_parts, 0);
  // tau = 0: non-anchor layers see proximal tokens only; anchors stay exact.
  auto skip_key = [&](int l, int h, int t, int j) {
    if (proximal(t, j, 3, 7)) return l;
    return blocks.is_anchor(l, h) ? l : -1;
  };
  PodCaseResult all = run_case(c, layout, in.kv, in.q, skip_key, own, 0.0f);
  EXPECT_LT(all.max_rel_err, 1e-5);
  EXPECT_EQ(all.stats.skipped_distant_parts, all.stats.distant_parts);
}

}  // namespace
}  // namespace podkv
