// Test-side glue between the old single-sequence test shape and the engine's
// per-step API: a host pool per cache, float32 write access to entries, and
// attention of one sequence's chunk through a freshly built KvView with its
// selection scores handed back to the cache, as the Runner does each step.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "kv/kv_cache.h"
#include "kv/kv_pool.h"
#include "kv/kv_view_builder.h"
#include "policy/policies.h"
#include "ops/attention.h"

namespace podkv::testing {

// A policy's layout with small windows for tests: `sink` + `recent` window,
// `budget` kept distant tokens, SnapKV's observation `window` (pooling 3),
// PoD blocks of `group` layers.
inline KvLayout small_policy_layout(const ModelConfig& c, const std::string& policy, int64_t sink, int64_t recent,
                                    int64_t budget, int64_t window, int group) {
  KvPolicyOptions o;
  o.policy = policy;
  o.sink_tokens = sink;
  o.recent_tokens = recent;
  o.budget = budget;
  o.observation_window = window;
  o.pool_kernel = 3;
  if (policy == "pod" || policy == "pod+snapkv")
    o.pod = uniform_pod_config(c.num_layers, c.num_kv_heads, group, static_cast<int>(sink), static_cast<int>(recent));
  return make_kv_layout(c, o);
}

// The host pool of `cache`, created and attached on first use.
inline HostKvPool& host_pool(KvCache& cache) {
  static std::map<const KvCache*, std::unique_ptr<HostKvPool>> pools;
  auto& slot = pools[&cache];
  if (cache.pool() == nullptr || cache.pool() != slot.get()) {
    slot = std::make_unique<HostKvPool>(cache.num_pages(), cache.page_bytes(), cache.entry_bytes());
    cache.attach_pool(slot.get());
  }
  return *slot;
}

inline uint8_t* entry(KvCache& cache, int kind, int seq, int layer, int head, int64_t pos) {
  const auto [page, slot] = cache.entry_location(seq, kind, layer, head, pos);
  return host_pool(cache).base() + static_cast<size_t>(page) * cache.page_bytes() + slot * cache.entry_bytes();
}

// Writes x [head_dim] as the key / value of `pos` (encoded in the cache's entry type).
inline void write_key(KvCache& cache, int seq, int layer, int head, int64_t pos, const float* x) {
  kv_encode(cache.dtype(), x, cache.layout().head_dim, entry(cache, kKeys, seq, layer, head, pos));
}
inline void write_value(KvCache& cache, int seq, int layer, int head, int64_t pos, const float* x) {
  kv_encode(cache.dtype(), x, cache.layout().head_dim, entry(cache, kValues, seq, layer, head, pos));
}
inline std::vector<float> read_key(KvCache& cache, int seq, int layer, int head, int64_t pos) {
  std::vector<float> x(cache.layout().head_dim);
  kv_decode(cache.dtype(), entry(cache, kKeys, seq, layer, head, pos), cache.layout().head_dim, x.data());
  return x;
}

// One sequence's chunk of one layer, the old test shape.
struct AttentionInput {
  KvCache* cache = nullptr;
  int seq = 0;
  int layer = 0;
  int num_heads = 0;
  float scale = 1.0f;
  std::optional<float> tau;
  std::vector<std::vector<float>>* gates = nullptr;  // [layer][token * H + head] of this chunk
  int64_t score_from = INT64_MAX;
  int64_t blocked_min_queries = 16;
};

// q: [tokens, H * d] at positions first_pos ..; the chunk's keys and values are in the cache.
inline void attention(const AttentionInput& in, const float* q, int64_t first_pos, int64_t tokens, float* out,
                      AttentionStats* stats = nullptr) {
  KvCache& cache = *in.cache;
  const int L = cache.layout().num_layers, H = in.num_heads;
  KvViewBuilder builder;
  const KvView& view = builder.build(cache, host_pool(cache).base(), {in.seq}, {first_pos + tokens});
  // Flat gates [L][tokens * H] from the per-layer vectors (anchors' rows are read).
  std::vector<float> gates(static_cast<size_t>(L) * tokens * H, 1.0f);
  if (in.gates != nullptr) {
    in.gates->resize(L);
    for (int l = 0; l < L; ++l)
      if ((*in.gates)[l].size() == static_cast<size_t>(tokens * H))
        std::copy((*in.gates)[l].begin(), (*in.gates)[l].end(), gates.begin() + static_cast<size_t>(l) * tokens * H);
  }
  std::vector<float> scores(static_cast<size_t>(builder.score_count()), 0.0f);
  const int64_t row_begin[2] = {0, tokens};
  const int64_t first[1] = {first_pos};
  const int64_t score_from[1] = {in.score_from};
  AttentionBatch batch;
  batch.num_seqs = 1;
  batch.row_begin = row_begin;
  batch.first_pos = first;
  batch.score_from = score_from;
  AttentionParams params;
  params.layer = in.layer;
  params.num_heads = H;
  params.scale = in.scale;
  params.tau = in.tau ? *in.tau : 1.0f;
  params.blocked_min_queries = in.blocked_min_queries;
  AttentionOutputs outputs;
  outputs.out = out;
  outputs.gates = gates.data();
  outputs.scores = scores.empty() ? nullptr : scores.data();
  outputs.stats = stats;
  podkv::attention(view, batch, params, q, outputs);
  if (in.gates != nullptr) {
    auto& mine = (*in.gates)[in.layer];
    mine.assign(gates.begin() + static_cast<size_t>(in.layer) * tokens * H,
                gates.begin() + static_cast<size_t>(in.layer + 1) * tokens * H);
  }
  if (!scores.empty()) builder.apply_scores(cache, {in.seq}, scores.data());
}

}  // namespace podkv::testing
