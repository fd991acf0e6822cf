// Attention of one layer for one batch step, over the paged KV cache's plain
// per-step view (kv/kv_view.h).
//
// For each query (position t, query head i, KV head h = i / (H / H_kv)) the keys
// are split into a proximal part (sink and recent window) and a distant part,
// each read from the stream the rules name (own layer, PoD anchor, or
// masked). Each part gives a partial result (max score m, sum of exp s,
// unnormalised output a); the two are merged by their log-sum-exp, which is one
// joint softmax over all keys. The proximal share of the probability mass is
// the PoD gate g = s_P / (s_P + s_D); with tau < 1, a non-anchor layer skips
// its distant part when the anchor layer's gate for the same token and query
// head is at least tau. With no window (recent_tokens == 0) every key is one part.
//
// Token selection: distant tokens of a selection group are read from its
// compact store (the kept tokens that left the window) plus the part of the
// window that is distant for the query. Queries at positions >= score_from add
// their attention probabilities, summed over the query heads of a KV head, to
// the step's score output (kv_view.h's layout), not to the cache: the caller
// adds them to the cache's groups after the step.
//
// Two kernels compute this: one query at a time (attention.cpp: decode and
// short runs, over every batch entry at once), and for runs of many queries a
// blocked flash-attention-style kernel (attention_prefill.cpp) that runs
// blocks of queries against tiles of keys with an online softmax; for scored
// queries it makes a second pass over the tiles to add the final
// probabilities to the scores. Both give the same results up to float rounding.
// Keys and values stored as f16/bf16/q8_0 are decoded to float32 per page run
// (per-query kernel) or per tile (blocked kernel).
#pragma once

#include <cstdint>

#include "kv/kv_view.h"

namespace podkv {

struct AttentionStats {
  int64_t distant_parts = 0;          // (query, head) pairs of non-anchor layers with distant keys
  int64_t skipped_distant_parts = 0;  // of those, skipped by tau
};

// The step's queries. Batch entry b (the view's entry b) has rows
// [row_begin[b], row_begin[b + 1]) of q, at positions first_pos[b] + (row - row_begin[b]).
struct AttentionBatch {
  int num_seqs = 0;
  const int64_t* row_begin = nullptr;   // [B + 1]
  const int64_t* first_pos = nullptr;   // [B]
  const int64_t* score_from = nullptr;  // [B] first position whose attention is scored; null = none
};

struct AttentionParams {
  int layer = 0;
  int num_heads = 0;    // query heads H
  float scale = 1.0f;   // 1 / sqrt(head_dim)
  float tau = 1.0f;     // PoD skipping threshold; >= 1 never skips
  // A run of queries of one entry is split into its unscored and its scored
  // queries; each part with at least this many queries uses the blocked
  // kernel (INT64_MAX: always one query at a time; tests compare the two).
  int64_t blocked_min_queries = 16;
};

struct AttentionOutputs {
  float* out = nullptr;     // [rows, H * d]
  // Gates of every layer for this step, [layer][row * H + head] (layer stride
  // rows * H); this layer's row is written, anchors' rows are read when tau < 1.
  // May be null when tau >= 1.
  float* gates = nullptr;
  float* scores = nullptr;  // the view's score output (added to); null when nothing is scored
  AttentionStats* stats = nullptr;
};

// q: [rows, H * d] (RoPE applied), whose keys and values are already in the cache.
void attention(const KvView& view, const AttentionBatch& batch, const AttentionParams& params, const float* q,
               const AttentionOutputs& outputs);

}  // namespace podkv
