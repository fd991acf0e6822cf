// What the two attention kernels (per query: attention.cpp; blocked prefill:
// attention_prefill.cpp) share: the per-call plan and the stream rules.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/attention.h"

namespace podkv::detail {

// Per-call facts both kernels read; built once by attention().
struct AttentionPlan {
  int kv_heads = 0, heads = 0, groups = 0, dim = 0;
  bool split = false;                  // recent_tokens > 0: proximal and distant parts
  bool scoring = false;                // some query of the chunk adds selection scores
  std::vector<float>* gates = nullptr; // this layer's gates [token * H + head], or null
  std::vector<int> distant_group;      // [KV head] selection group of its distant keys, -1 = position-indexed
  std::vector<KvCache::GroupScores> group_scores;  // [KV head]
};

// The layer a class of tokens of a stream is read from, or -1 when masked.
inline int source_layer(int layer, const StreamRule& rule, bool distant) {
  if (distant && (rule.retention == Retention::Window || rule.retention == Retention::None)) return rule.distant_source;
  if (!distant && rule.retention == Retention::None) return rule.proximal_source;
  return layer;
}

// Queries [t_begin, t_end) of the chunk; stats are added to the counters.
// Both kernels handle everything (decode, selection scoring). When some query
// of the range is scored, the blocked kernel runs one thread per KV head (the
// head's blocks in order), so that no two threads write one head's scores.
void attention_per_query(const AttentionInput& in, const AttentionPlan& plan, const float* q, int64_t first_pos,
                         int64_t t_begin, int64_t t_end, float* out, int64_t& distant_parts, int64_t& skipped);
void attention_blocked(const AttentionInput& in, const AttentionPlan& plan, const float* q, int64_t first_pos,
                       int64_t t_begin, int64_t t_end, float* out, int64_t& distant_parts, int64_t& skipped);

}  // namespace podkv::detail
