// attention(): the per-call plan and the choice of kernel; the per-query
// kernel itself (decode steps, short runs of queries, and the definition the blocked
// kernel of attention_prefill.cpp is tested against).
#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "util/error.h"

#include "ops/attention_internal.h"
#include "util/simd.h"

namespace podkv {

namespace detail {

namespace {

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
  float* scores = nullptr;     // scores[j - score_base] for index j; null = not scored
  int64_t score_base = 0;
};

// One score. The lanes are summed as a tree: `omp simd reduction` left GCC 12 summing its 16 lanes
// one after another (16 dependent adds per key and query head, about a third of a CPU decode step
// at 8K tokens of context).
inline float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
  int i = 0;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  s = _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  s = reduce_add(acc);
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// w[g · n + r] = scale · q[g] · key[r] for a run of `run` keys [run, dim]. With AVX-512 and
// head_dim 64 or 128: each head's q in registers over the run, and four keys' lane sums reduced
// together (reduce4: about 3 shuffles and adds a score instead of 8).
#if defined(__AVX512F__) && defined(__AVX512DQ__)
template <int NV>
void scores_in_registers(const float* q, int groups, const float* key, int64_t run, float scale, float* w, int64_t n) {
  for (int g = 0; g < groups; ++g) {
    __m512 qv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) qv[v] = _mm512_loadu_ps(q + (g * NV + v) * 16);
    auto lanes = [&qv](const float* k) {
      __m512 a = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k));
#pragma GCC unroll 8
      for (int v = 1; v < NV; ++v) a = _mm512_fmadd_ps(qv[v], _mm512_loadu_ps(k + 16 * v), a);
      return a;
    };
    float* wg = w + g * n;
    int64_t r = 0;
    for (; r + 4 <= run; r += 4) {
      const float* k = key + r * 16 * NV;
      const __m128 sums = reduce4(lanes(k), lanes(k + 16 * NV), lanes(k + 32 * NV), lanes(k + 48 * NV));
      _mm_storeu_ps(wg + r, _mm_mul_ps(sums, _mm_set1_ps(scale)));
    }
    for (; r < run; ++r) wg[r] = _mm512_reduce_add_ps(lanes(key + r * 16 * NV)) * scale;
  }
}
#endif
void add_scores_of_run(const float* q, int groups, int dim, const float* key, int64_t run, float scale, float* w,
                       int64_t n) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  if (dim == 64) return scores_in_registers<4>(q, groups, key, run, scale, w, n);
  if (dim == 128) return scores_in_registers<8>(q, groups, key, run, scale, w, n);
#endif
  for (int64_t r = 0; r < run; ++r, key += dim)
    for (int g = 0; g < groups; ++g) w[g * n + r] = dot(q + g * dim, key, dim) * scale;
}

// acc[g] += Σ_r w[g · n + r] · value[r] for a run of `run` values [run, dim] (w: the run's weights
// in a [G, n] row-major array). With AVX-512 and head_dim 64 or 128 each head's accumulator stays
// in registers over the run (it went through memory for every value; without the unroll pragmas
// GCC 12 kept a[] on the stack); every lane's sum is the same sequence of fused multiply-adds.
#if defined(__AVX512F__)
template <int NV>
void add_values_in_registers(const float* value, int64_t run, const float* w, int64_t n, int groups, float* acc) {
  for (int g = 0; g < groups; ++g) {
    float* ag = acc + static_cast<size_t>(g) * 16 * NV;
    const float* wg = w + g * n;
    __m512 a[NV];
#pragma GCC unroll 8
    for (int k = 0; k < NV; ++k) a[k] = _mm512_loadu_ps(ag + 16 * k);
    for (int64_t r = 0; r < run; ++r) {
      const __m512 p = _mm512_set1_ps(wg[r]);
      const float* v = value + r * 16 * NV;
#pragma GCC unroll 8
      for (int k = 0; k < NV; ++k) a[k] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16 * k), a[k]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < NV; ++k) _mm512_storeu_ps(ag + 16 * k, a[k]);
  }
}
#endif
void add_values(const float* value, int64_t run, int dim, const float* w, int64_t n, int groups, float* acc) {
#if defined(__AVX512F__)
  if (dim == 64) return add_values_in_registers<4>(value, run, w, n, groups, acc);
  if (dim == 128) return add_values_in_registers<8>(value, run, w, n, groups, acc);
#endif
  for (int64_t r = 0; r < run; ++r, value += dim) {
    for (int g = 0; g < groups; ++g) {
      const float p = w[g * n + r];
      float* a = acc + static_cast<size_t>(g) * dim;
#pragma omp simd
      for (int i = 0; i < dim; ++i) a[i] += p * value[i];
    }
  }
}

// Adds the keys of `spans` to `part` (two passes: scores, then exp and values).
// Leaves exp(score - max) in `weights` [G, n] for add_scores.
void accumulate(const std::vector<Span>& spans, KvDType type, const float* q, int groups, int dim, float scale,
                std::vector<float>& weights, std::vector<float>& run_buf, Partials& part) {
  int64_t n = 0;
  for (const Span& s : spans) n += s.end - s.begin;
  if (n == 0) return;
  weights.resize(static_cast<size_t>(groups) * n);
  // Pass 1: scores [G, n], walking each page's contiguous run of keys.
  int64_t col = 0;
  for (const Span& s : spans) {
    for (int64_t j = s.begin; j < s.end;) {
      const int64_t run = std::min(s.end - j, s.keys.page_tokens - j % s.keys.page_tokens);
      const float* key = load_run(s.keys, type, j, run, dim, run_buf);
      add_scores_of_run(q, groups, dim, key, run, scale, weights.data() + col, n);
      col += run;
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
      const int64_t run = std::min(s.end - j, s.values.page_tokens - j % s.values.page_tokens);
      const float* value = load_run(s.values, type, j, run, dim, run_buf);
      add_values(value, run, dim, weights.data() + col, n, groups, part.acc.data());
      col += run;
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
      s.scores[j - s.score_base] += p;
    }
  }
}

}  // namespace

// The definition: one query (and KV head) at a time, every part's scores in
// full before its softmax. Decode and selection scoring run here.
void attention_per_query(const AttentionPlan& plan, const float* q, const QueryRuns& runs, float* out,
                         int64_t& distant_parts_total, int64_t& skipped_total) {
  const KvView& view = *plan.view;
  const AttentionBatch& batch = *plan.batch;
  const AttentionParams& params = *plan.params;
  const int kv_heads = plan.kv_heads, dim = plan.dim, heads = plan.heads, groups = plan.groups;
  const bool split = plan.split;
  const int layer = params.layer;
  // Work items: (run, query, KV head), or (run, KV head) with the run's queries
  // in order when the run is scored (one thread owns a head's scores).
  const int num_runs = static_cast<int>(runs.entries.size());
  bool scoring = false;
  std::vector<int64_t> item_begin(num_runs + 1, 0);
  for (int r = 0; r < num_runs; ++r) {
    const int b = runs.entries[r];
    const bool scored = plan.scores != nullptr && batch.score_from != nullptr &&
                        batch.first_pos[b] + runs.t_end[r] > batch.score_from[b];
    scoring = scoring || scored;
    item_begin[r + 1] = item_begin[r] + (runs.t_end[r] - runs.t_begin[r]) * kv_heads;
  }
  int64_t distant_parts = 0, skipped = 0;

#pragma omp parallel reduction(+ : distant_parts, skipped)
  {
    Partials prox, dist;
    std::vector<float> prox_weights, dist_weights, run_buf;
    std::vector<Span> prox_spans, dist_spans;
    auto one_query = [&](int b, int64_t t, int h) {
      const int64_t pos = batch.first_pos[b] + t;
      const int64_t row = batch.row_begin[b] + t;
      const float* q_group = q + (row * heads + static_cast<int64_t>(h) * groups) * dim;
      const KvRule& krule = plan.key_rule(h);
      const KvRule& vrule = plan.value_rule(h);
      const int group = plan.distant_group[h];
      const bool score_this = plan.scores != nullptr && batch.score_from != nullptr && pos >= batch.score_from[b] &&
                              group >= 0;
      float* const region = score_this ? plan.score_region(b, group) : nullptr;
      const int64_t store_size = group >= 0 ? view.store_size[b * view.num_groups + group] : 0;
      const int64_t window_base = view.window_base[b];
      prox.reset(groups, dim);
      dist.reset(groups, dim);
      // Token classes for query position pos (pod-method.md).
      const int64_t s_end = sink_end(pos, view.sink_tokens, split);
      const int64_t r_begin = recent_begin(pos, view.sink_tokens, view.recent_tokens, split);
      // Window scores sit after the store slots, indexed from window_base.
      const int64_t window_score_base = window_base - store_size;
      // Proximal: sink and recent spans together in one partial.
      {
        const StreamView k = stream_view(view, b, kKeys, source_layer(layer, krule, false), h);
        const StreamView v = stream_view(view, b, kValues, source_layer(layer, vrule, false), h);
        prox_spans.clear();
        if (s_end > 0) prox_spans.push_back(Span{0, s_end, k, v, nullptr, 0});
        prox_spans.push_back(Span{r_begin, pos + 1, k, v, region, window_score_base});
        accumulate(prox_spans, view.dtype, q_group, groups, dim, params.scale, prox_weights, run_buf, prox);
      }
      const bool distant = split && r_begin > s_end;
      const bool shared = krule.retention == kRetainWindow || krule.retention == kRetainNone;
      // Per query head: skip its distant part when the anchor's gate for the
      // same token and head is at least tau. Keys are shared by the group, so
      // the distant keys are read unless every head of the group skips.
      bool skip_head[64] = {};
      int skipping = 0;
      if (distant && shared && krule.distant_source >= 0) {
        distant_parts += groups;
        // tau >= 1 never skips (a gate of exactly 1 means no distant mass anyway).
        if (params.tau < 1.0f && plan.all_gates != nullptr) {
          for (int g = 0; g < groups && g < 64; ++g) {
            skip_head[g] = plan.gate(krule.distant_source, row, h * groups + g) >= params.tau;
            skipping += skip_head[g];
          }
          skipped += skipping;
        }
      }
      dist_spans.clear();
      const int k_layer = source_layer(layer, krule, true);
      const int v_layer = source_layer(layer, vrule, true);
      if (distant && skipping < groups && k_layer >= 0 && v_layer >= 0) {
        const StreamView k = stream_view(view, b, kKeys, k_layer, h);
        const StreamView v = stream_view(view, b, kValues, v_layer, h);
        if (group < 0) {
          dist_spans.push_back(Span{s_end, r_begin, k, v, nullptr, 0});
        } else {
          // Kept tokens that left the window, then the window's distant part.
          dist_spans.push_back(Span{0, store_size, stream_view(view, b, kKeyStore, k_layer, h),
                                    stream_view(view, b, kValueStore, v_layer, h), region, 0});
          const int64_t begin = std::max(s_end, window_base);
          if (r_begin > begin) dist_spans.push_back(Span{begin, r_begin, k, v, region, window_score_base});
        }
        accumulate(dist_spans, view.dtype, q_group, groups, dim, params.scale, dist_weights, run_buf, dist);
      }
      float prox_factor[64], dist_factor[64];
      for (int g = 0; g < groups; ++g) {
        const float m = skip_head[g] ? prox.max[g] : std::max(prox.max[g], dist.max[g]);
        const float wp = prox.sum[g] > 0 ? std::exp(prox.max[g] - m) : 0.0f;
        const float wd = dist.sum[g] > 0 && !skip_head[g] ? std::exp(dist.max[g] - m) : 0.0f;
        const float sp = prox.sum[g] * wp, sd = dist.sum[g] * wd;
        const float inv = 1.0f / (sp + sd);
        float* o = out + (row * heads + static_cast<int64_t>(h) * groups + g) * dim;
        const float* ap = prox.acc.data() + static_cast<size_t>(g) * dim;
        const float* ad = dist.acc.data() + static_cast<size_t>(g) * dim;
        for (int i = 0; i < dim; ++i) o[i] = (ap[i] * wp + ad[i] * wd) * inv;
        if (plan.gates != nullptr) plan.gates[row * heads + h * groups + g] = sp * inv;
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
#pragma omp for collapse(2) schedule(dynamic, 1)
      for (int r = 0; r < num_runs; ++r)
        for (int h = 0; h < kv_heads; ++h)
          for (int64_t t = runs.t_begin[r]; t < runs.t_end[r]; ++t) one_query(runs.entries[r], t, h);
    } else {
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < item_begin[num_runs]; ++item) {
        const int r = static_cast<int>(std::upper_bound(item_begin.begin(), item_begin.end(), item) - item_begin.begin()) - 1;
        const int64_t local = item - item_begin[r];
        one_query(runs.entries[r], runs.t_begin[r] + local / kv_heads, static_cast<int>(local % kv_heads));
      }
    }
  }
  distant_parts_total += distant_parts;
  skipped_total += skipped;
}

}  // namespace detail

void attention(const KvView& view, const AttentionBatch& batch, const AttentionParams& params, const float* q,
               const AttentionOutputs& outputs) {
  detail::AttentionPlan plan;
  plan.view = &view;
  plan.batch = &batch;
  plan.params = &params;
  plan.kv_heads = view.num_kv_heads;
  plan.dim = view.head_dim;
  plan.heads = params.num_heads;
  plan.groups = params.num_heads / view.num_kv_heads;
  // The per-query kernel keeps per-head flags in arrays of 64.
  check(plan.groups >= 1 && plan.groups <= 64 && params.num_heads % view.num_kv_heads == 0,
        "attention: " + std::to_string(params.num_heads) + " query heads over " + std::to_string(view.num_kv_heads) +
            " KV heads is not supported (at most 64 query heads per KV head)");
  check(params.layer >= 0 && params.layer < view.num_layers, "attention: no layer " + std::to_string(params.layer));
  plan.split = view.recent_tokens > 0;
  plan.total_rows = batch.row_begin[batch.num_seqs];
  plan.all_gates = outputs.gates;
  plan.gates = outputs.gates != nullptr ? outputs.gates + params.layer * plan.total_rows * plan.heads : nullptr;
  if (plan.gates != nullptr) std::fill_n(plan.gates, plan.total_rows * plan.heads, 1.0f);
  plan.scores = view.num_groups > 0 ? outputs.scores : nullptr;
  // Per KV head: the selection group of its distant tokens (-1: position-indexed).
  plan.distant_group.assign(plan.kv_heads, -1);
  for (int h = 0; h < plan.kv_heads; ++h) plan.distant_group[h] = plan.key_rule(h).distant_group;
  // Per entry, queries before `scored` add nothing to the selection scores,
  // the rest do. Each of the two runs goes to the blocked kernel when it has
  // enough queries, else (decode steps, short runs) to the per-query kernel,
  // which takes the short runs of every entry at once. Split this way, the
  // unscored run keeps the blocked kernel's full parallelism.
  int64_t distant_parts = 0, skipped = 0;
  detail::QueryRuns short_runs;
  for (int b = 0; b < batch.num_seqs; ++b) {
    const int64_t tokens = batch.row_begin[b + 1] - batch.row_begin[b];
    const bool scoring = plan.scores != nullptr && batch.score_from != nullptr &&
                         batch.first_pos[b] + tokens > batch.score_from[b];
    const int64_t scored = scoring ? std::clamp<int64_t>(batch.score_from[b] - batch.first_pos[b], 0, tokens) : tokens;
    for (auto [t_begin, t_end] : {std::pair{int64_t{0}, scored}, std::pair{scored, tokens}}) {
      if (t_end <= t_begin) continue;
      if (t_end - t_begin >= params.blocked_min_queries) {
        detail::attention_blocked(plan, q, b, t_begin, t_end, outputs.out, distant_parts, skipped);
      } else {
        short_runs.entries.push_back(b);
        short_runs.t_begin.push_back(t_begin);
        short_runs.t_end.push_back(t_end);
      }
    }
  }
  if (!short_runs.entries.empty())
    detail::attention_per_query(plan, q, short_runs, outputs.out, distant_parts, skipped);
  if (outputs.stats != nullptr) {
    outputs.stats->distant_parts += distant_parts;
    outputs.stats->skipped_distant_parts += skipped;
  }
}

}  // namespace podkv
