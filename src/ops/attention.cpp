// attention(): the per-call plan and the choice of kernel; the per-query
// kernel itself (decode steps, short runs of queries, and the definition the blocked
// kernel of attention_prefill.cpp is tested against).
#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/attention_internal.h"

namespace podkv {

namespace detail {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Softmax partial over some keys for G query heads: max score, sum of
// exp(score - max), and the unnormalised weighted sum of values [G, d].
struct Partials {
  int groups = 0;
  int dim = 0;
  std::vector<float> max, sum, acc;
  void reset(int g, int d) {
    groups = g;
    dim = d;
    max.assign(g, kNegInf);
    sum.assign(g, 0.0f);
    acc.assign(static_cast<size_t>(g) * d, 0.0f);
  }
};

struct Span {
  int64_t begin = 0, end = 0;  // indices into the views: positions, or selection-store slots
  StreamView keys, values;
  float* scores = nullptr;     // accumulated attention, indexed like the views; null = not scored
};

inline float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Adds the keys of `spans` to `part` (two passes: scores, then exp and values).
// Leaves exp(score - max) in `weights` [G, n] for add_scores.
void accumulate(const std::vector<Span>& spans, const float* q, int groups, int dim, float scale,
                std::vector<float>& weights, Partials& part) {
  int64_t n = 0;
  for (const Span& s : spans) n += s.end - s.begin;
  if (n == 0) return;
  weights.resize(static_cast<size_t>(groups) * n);
  // Pass 1: scores [G, n], walking each page's contiguous run of keys.
  int64_t col = 0;
  for (const Span& s : spans) {
    for (int64_t j = s.begin; j < s.end;) {
      const float* key = s.keys.at(j);
      const int64_t run = std::min(s.end - j, s.keys.page_tokens - j % s.keys.page_tokens);
      for (int64_t r = 0; r < run; ++r, key += dim, ++col) {
        for (int g = 0; g < groups; ++g) weights[g * n + col] = dot(q + g * dim, key, dim) * scale;
      }
      j += run;
    }
  }
  for (int g = 0; g < groups; ++g) {
    float* row = weights.data() + g * n;
    float m = kNegInf;
    for (int64_t c = 0; c < n; ++c) m = std::max(m, row[c]);
    float total = 0.0f;
    for (int64_t c = 0; c < n; ++c) {
      row[c] = std::exp(row[c] - m);
      total += row[c];
    }
    part.max[g] = m;
    part.sum[g] = total;
  }
  // Pass 2: acc[g] = Σ_c p[g, c] · v_c.
  col = 0;
  for (const Span& s : spans) {
    for (int64_t j = s.begin; j < s.end;) {
      const float* value = s.values.at(j);
      const int64_t run = std::min(s.end - j, s.values.page_tokens - j % s.values.page_tokens);
      for (int64_t r = 0; r < run; ++r, value += dim, ++col) {
        for (int g = 0; g < groups; ++g) {
          const float p = weights[g * n + col];
          float* a = part.acc.data() + static_cast<size_t>(g) * dim;
#pragma omp simd
          for (int i = 0; i < dim; ++i) a[i] += p * value[i];
        }
      }
      j += run;
    }
  }
}

// scores[j] += Σ_g weights[g, col(j)] · factor[g]: the final probabilities of
// one part (factor = exp(part max - joint max) / joint sum, 0 when skipped).
void add_scores(const std::vector<Span>& spans, const std::vector<float>& weights, int groups, const float* factor) {
  int64_t n = 0;
  for (const Span& s : spans) n += s.end - s.begin;
  int64_t col = 0;
  for (const Span& s : spans) {
    for (int64_t j = s.begin; j < s.end; ++j, ++col) {
      if (s.scores == nullptr) continue;
      float p = 0.0f;
      for (int g = 0; g < groups; ++g) p += weights[g * n + col] * factor[g];
      s.scores[j] += p;
    }
  }
}

}  // namespace

// The definition: one query (and KV head) at a time, every part's scores in
// full before its softmax. Decode and selection scoring run here.
void attention_per_query(const AttentionInput& in, const AttentionPlan& plan, const float* q, int64_t first_pos,
                         int64_t t_begin, int64_t t_end, float* out, int64_t& distant_parts_total,
                         int64_t& skipped_total) {
  KvCache& cache = *in.cache;
  const KvLayout& layout = cache.layout();
  const int kv_heads = plan.kv_heads, dim = plan.dim, heads = plan.heads, groups = plan.groups;
  const bool split = plan.split, scoring = plan.scoring;
  std::vector<float>* my_gates = plan.gates;
  const std::vector<int>& distant_group = plan.distant_group;
  const std::vector<KvCache::GroupScores>& group_scores = plan.group_scores;
  int64_t distant_parts = 0, skipped = 0;

#pragma omp parallel reduction(+ : distant_parts, skipped)
  {
    Partials prox, dist;
    std::vector<float> prox_weights, dist_weights;
    std::vector<Span> prox_spans, dist_spans;
    auto one_query = [&](int64_t t, int h) {
      const int64_t pos = first_pos + t;
      const float* q_group = q + (t * heads + static_cast<int64_t>(h) * groups) * dim;
      const StreamRule& krule = layout.key_rule(in.layer, h);
      const StreamRule& vrule = layout.value_rule(in.layer, h);
      const int group = distant_group[h];
      const KvCache::GroupScores& gs = group_scores[h];
      const bool score_this = scoring && pos >= in.score_from && group >= 0;
      float* window_scores = score_this ? gs.window - gs.window_base : nullptr;
      prox.reset(groups, dim);
      dist.reset(groups, dim);
      // Token classes for query position pos (pod-method.md).
      const int64_t sink_end = split ? std::min(layout.sink_tokens, pos + 1) : 0;
      const int64_t recent_begin = split ? std::max(sink_end, pos - layout.recent_tokens + 1) : 0;
      // Proximal: sink and recent spans together in one partial.
      {
        const StreamView k = cache.keys(in.seq, source_layer(in.layer, krule, false), h);
        const StreamView v = cache.values(in.seq, source_layer(in.layer, vrule, false), h);
        prox_spans.clear();
        if (sink_end > 0) prox_spans.push_back(Span{0, sink_end, k, v, nullptr});
        prox_spans.push_back(Span{recent_begin, pos + 1, k, v, window_scores});
        accumulate(prox_spans, q_group, groups, dim, in.scale, prox_weights, prox);
      }
      const bool has_distant = split && recent_begin > sink_end;
      const bool shared = krule.retention == Retention::Window || krule.retention == Retention::None;
      // Per query head: skip its distant part when the anchor's gate for the
      // same token and head is at least tau. Keys are shared by the group, so
      // the distant keys are read unless every head of the group skips.
      bool skip_head[64] = {};
      int skipping = 0;
      if (has_distant && shared && krule.distant_source >= 0) {
        distant_parts += groups;
        // tau >= 1 never skips (a gate of exactly 1 means no distant mass anyway).
        if (in.tau && *in.tau < 1.0f && in.gates != nullptr) {
          const auto& anchor_gates = (*in.gates)[krule.distant_source];
          for (int g = 0; g < groups && g < 64; ++g) {
            skip_head[g] = anchor_gates[t * heads + h * groups + g] >= *in.tau;
            skipping += skip_head[g];
          }
          skipped += skipping;
        }
      }
      dist_spans.clear();
      const int k_layer = source_layer(in.layer, krule, true);
      const int v_layer = source_layer(in.layer, vrule, true);
      if (has_distant && skipping < groups && k_layer >= 0 && v_layer >= 0) {
        const StreamView k = cache.keys(in.seq, k_layer, h);
        const StreamView v = cache.values(in.seq, v_layer, h);
        if (group < 0) {
          dist_spans.push_back(Span{sink_end, recent_begin, k, v, nullptr});
        } else {
          // Kept tokens that left the window, then the window's distant part.
          dist_spans.push_back(Span{0, gs.store_size, cache.key_store(in.seq, k_layer, h),
                                    cache.value_store(in.seq, v_layer, h), score_this ? gs.store : nullptr});
          const int64_t begin = std::max(sink_end, gs.window_base);
          if (recent_begin > begin) dist_spans.push_back(Span{begin, recent_begin, k, v, window_scores});
        }
        accumulate(dist_spans, q_group, groups, dim, in.scale, dist_weights, dist);
      }
      float prox_factor[64], dist_factor[64];
      for (int g = 0; g < groups; ++g) {
        const float m = skip_head[g] ? prox.max[g] : std::max(prox.max[g], dist.max[g]);
        const float wp = prox.sum[g] > 0 ? std::exp(prox.max[g] - m) : 0.0f;
        const float wd = dist.sum[g] > 0 && !skip_head[g] ? std::exp(dist.max[g] - m) : 0.0f;
        const float sp = prox.sum[g] * wp, sd = dist.sum[g] * wd;
        const float inv = 1.0f / (sp + sd);
        float* o = out + (t * heads + static_cast<int64_t>(h) * groups + g) * dim;
        const float* ap = prox.acc.data() + static_cast<size_t>(g) * dim;
        const float* ad = dist.acc.data() + static_cast<size_t>(g) * dim;
        for (int i = 0; i < dim; ++i) o[i] = (ap[i] * wp + ad[i] * wd) * inv;
        if (my_gates != nullptr) (*my_gates)[t * heads + h * groups + g] = sp * inv;
        if (g < 64) {
          prox_factor[g] = wp * inv;
          dist_factor[g] = wd * inv;
        }
      }
      if (score_this && groups <= 64) {
        add_scores(prox_spans, prox_weights, groups, prox_factor);
        if (!dist_spans.empty()) add_scores(dist_spans, dist_weights, groups, dist_factor);
      }
    };
    if (scoring) {
#pragma omp for schedule(dynamic, 1)
      for (int h = 0; h < kv_heads; ++h)
        for (int64_t t = t_begin; t < t_end; ++t) one_query(t, h);
    } else {
#pragma omp for collapse(2) schedule(dynamic, 1)
      for (int64_t t = t_begin; t < t_end; ++t)
        for (int h = 0; h < kv_heads; ++h) one_query(t, h);
    }
  }
  distant_parts_total += distant_parts;
  skipped_total += skipped;
}

}  // namespace detail

void attention(const AttentionInput& in, const float* q, int64_t first_pos, int64_t tokens, float* out,
               AttentionStats* stats) {
  KvCache& cache = *in.cache;
  const KvLayout& layout = cache.layout();
  detail::AttentionPlan plan;
  plan.kv_heads = layout.num_kv_heads;
  plan.dim = layout.head_dim;
  plan.heads = in.num_heads;
  plan.groups = in.num_heads / layout.num_kv_heads;
  // The per-query kernel keeps per-head flags in arrays of 64.
  check(plan.groups >= 1 && plan.groups <= 64 && in.num_heads % layout.num_kv_heads == 0,
        "attention: " + std::to_string(in.num_heads) + " query heads over " + std::to_string(layout.num_kv_heads) +
            " KV heads is not supported (at most 64 query heads per KV head)");
  plan.split = layout.recent_tokens > 0;
  plan.gates = in.gates != nullptr ? &(*in.gates)[in.layer] : nullptr;
  if (plan.gates != nullptr) plan.gates->assign(static_cast<size_t>(tokens) * in.num_heads, 1.0f);
  // Scores are summed per KV head across queries: one thread per KV head then.
  plan.scoring = layout.selection != Selection::None && first_pos + tokens > in.score_from;
  // Per KV head: the selection group of its distant tokens (-1: position-indexed).
  plan.distant_group.assign(plan.kv_heads, -1);
  plan.group_scores.resize(plan.kv_heads);
  for (int h = 0; h < plan.kv_heads; ++h) {
    plan.distant_group[h] = layout.distant_group(layout.key_rule(in.layer, h), layout.keys, h);
    if (plan.distant_group[h] >= 0) plan.group_scores[h] = cache.group_scores(in.seq, plan.distant_group[h]);
  }
  // Queries before `scored` add nothing to the selection scores, the rest do.
  // Each of the two runs goes to the blocked kernel when it has enough
  // queries, else (decode steps, short runs) to the per-query kernel. Split
  // this way, the unscored run keeps the blocked kernel's full parallelism.
  const int64_t scored = plan.scoring ? std::clamp<int64_t>(in.score_from - first_pos, 0, tokens) : tokens;
  int64_t distant_parts = 0, skipped = 0;
  auto run = [&](int64_t t_begin, int64_t t_end) {
    if (t_end <= t_begin) return;
    if (t_end - t_begin >= in.blocked_min_queries)
      detail::attention_blocked(in, plan, q, first_pos, t_begin, t_end, out, distant_parts, skipped);
    else
      detail::attention_per_query(in, plan, q, first_pos, t_begin, t_end, out, distant_parts, skipped);
  };
  run(0, scored);
  run(scored, tokens);
  if (stats != nullptr) {
    stats->distant_parts += distant_parts;
    stats->skipped_distant_parts += skipped;
  }
}

}  // namespace podkv
