// Attention of one layer over a paged KV cache, for a chunk of queries.
//
// For each query (position t, query head i, KV head h = i / (H / H_kv)) the keys
// are split into a proximal part (sink and recent window) and a distant part,
// each read from the stream the KvLayout names (own layer, PoD anchor, or
// masked). Each part gives a partial result (max score m, sum of exp s,
// unnormalised output a); the two are merged by their log-sum-exp, which is one
// joint softmax over all keys. The proximal share of the probability mass is
// the PoD gate g = s_P / (s_P + s_D); with tau set, a non-anchor layer skips
// its distant part when the anchor layer's gate for the same token and query
// head is at least tau. With no window (recent_tokens == 0) every key is one part.
//
// Token selection: distant tokens of a selection group are read from its
// compact store (the kept tokens that left the window) plus the part of the
// window that is distant for the query. Queries at positions >= score_from add
// their attention probabilities, summed over the query heads of a KV head, to
// the group's scores (H2O: every query; SnapKV: the observation window).
//
// Two kernels compute this: one query at a time (attention.cpp: decode and
// short chunks), and for chunks of many queries a blocked flash-attention-style
// kernel (attention_prefill.cpp) that runs blocks of queries against tiles of
// keys with an online softmax; for scored queries it makes a second pass over
// the tiles to add the final probabilities to the scores. Both give the same
// results up to float rounding.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "kv/kv_cache.h"

namespace podkv {

struct AttentionStats {
  int64_t distant_parts = 0;          // (query, head) pairs of non-anchor layers with distant keys
  int64_t skipped_distant_parts = 0;  // of those, skipped by tau
};

struct AttentionInput {
  KvCache* cache = nullptr;  // mutable only for the selection scores
  int seq = 0;
  int layer = 0;
  int num_heads = 0;        // query heads H
  float scale = 1.0f;       // 1 / sqrt(head_dim)
  std::optional<float> tau; // PoD skipping threshold (absent = never skip)
  // Gates of every layer for this chunk, [layer][token * H + head]; this layer's
  // row is written, anchors' rows are read when tau is set.
  std::vector<std::vector<float>>* gates = nullptr;
  // First query position whose attention is added to the selection scores.
  int64_t score_from = INT64_MAX;
  // A chunk is split into its unscored and its scored queries; each part with
  // at least this many queries uses the blocked kernel (INT64_MAX: always one
  // query at a time; tests compare the two).
  int64_t blocked_min_queries = 16;
};

// q: [tokens, H * d] (RoPE applied), positions first_pos .. first_pos + tokens - 1,
// whose keys and values are already in the cache. out: [tokens, H * d].
void attention(const AttentionInput& in, const float* q, int64_t first_pos, int64_t tokens, float* out,
               AttentionStats* stats = nullptr);

}  // namespace podkv
