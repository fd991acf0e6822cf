// What the two attention kernels (per query: attention.cpp; blocked prefill:
// attention_prefill.cpp) share: the per-call plan and row loading.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "kv/token_classes.h"
#include "ops/attention.h"

namespace podkv::detail {

// A score that no key gives: the empty softmax's running max.
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Per-call facts both kernels read; built once by attention().
struct AttentionPlan {
  const KvView* view = nullptr;
  const AttentionBatch* batch = nullptr;
  const AttentionParams* params = nullptr;
  int kv_heads = 0, heads = 0, groups = 0, dim = 0;
  bool split = false;            // recent_tokens > 0: proximal and distant parts
  int64_t total_rows = 0;        // rows of the step (gate layer stride / H)
  float* gates = nullptr;        // this layer's gates [row * H + head], or null
  float* all_gates = nullptr;    // every layer's, for tau
  float* scores = nullptr;       // the step's score output, or null
  std::vector<int> distant_group;  // [KV head] selection group of its distant keys, -1 = position-indexed

  const KvRule& key_rule(int h) const { return view->key_rules[params->layer * kv_heads + h]; }
  const KvRule& value_rule(int h) const { return view->value_rules[params->layer * kv_heads + h]; }
  // Anchor gates of `layer` for row `row`, query head `head`.
  float gate(int layer, int64_t row, int head) const { return all_gates[(layer * total_rows + row) * heads + head]; }
  // The score region of entry b's group g: store slots, then window positions.
  float* score_region(int b, int g) const { return scores + view->score_indptr[b * view->num_groups + g]; }
};

inline int source_layer(int layer, const KvRule& rule, bool distant) {
  return podkv::source_layer(layer, rule.retention, rule.distant_source, rule.proximal_source, distant);
}

// Rows [j, j + run) of a stream, within one page, as float32: a pointer into
// the pool for f32 entries, else decoded into `buf` [run, dim].
// The next run's page is prefetched meanwhile: pages lie anywhere in the pool, and a page's few KB
// are too short a stream for the hardware prefetcher to run ahead of (CPU decode at 8K tokens of
// context waited on them in the decode below).
inline const float* load_run(const StreamView& v, KvDType type, int64_t j, int64_t run, int dim,
                             std::vector<float>& buf) {
  const uint8_t* p = v.at(j);
  if (const int64_t next = j + run; v.holds(next)) {
    const uint8_t* n = v.at(next);
    const int64_t bytes = (v.page_tokens - next % v.page_tokens) * v.entry_bytes;
    for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(n + o, 0, 3);
  }
  if (type == KvDType::F32) return reinterpret_cast<const float*>(p);
  if (buf.size() < static_cast<size_t>(run * dim)) buf.resize(static_cast<size_t>(run * dim));
  // f16 / bf16 entries of exactly dim values: the run is one array of run · dim values.
  if ((type == KvDType::F16 || type == KvDType::BF16) && v.entry_bytes == 2 * static_cast<int64_t>(dim)) {
    kv_decode(type, p, run * dim, buf.data());
    return buf.data();
  }
  for (int64_t r = 0; r < run; ++r) kv_decode(type, p + r * v.entry_bytes, dim, buf.data() + r * dim);
  return buf.data();
}

// Queries [t_begin, t_end) (entry-relative) of batch entry b; stats are added
// to the counters. Both kernels handle everything (decode, selection
// scoring). When some query of the range is scored, the blocked kernel runs
// one thread per KV head (the head's blocks in order), so that no two threads
// write one head's scores.
void attention_blocked(const AttentionPlan& plan, const float* q, int b, int64_t t_begin, int64_t t_end, float* out,
                       int64_t& distant_parts, int64_t& skipped);
// Per-query kernel over runs of several entries at once: run i is entry
// entries[i], queries [t_begin[i], t_end[i]).
struct QueryRuns {
  std::vector<int> entries;
  std::vector<int64_t> t_begin, t_end;
};
void attention_per_query(const AttentionPlan& plan, const float* q, const QueryRuns& runs, float* out,
                         int64_t& distant_parts, int64_t& skipped);

}  // namespace podkv::detail
