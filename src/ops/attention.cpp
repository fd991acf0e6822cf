#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace podkv {

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
  int64_t begin = 0, end = 0;  // positions [begin, end)
  StreamView keys, values;
};

inline float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Adds the keys of `spans` to `part` (two passes: scores, then exp and values).
void accumulate(const std::vector<Span>& spans, const float* q, int groups, int dim, float scale,
                std::vector<float>& scores, Partials& part) {
  int64_t n = 0;
  for (const Span& s : spans) n += s.end - s.begin;
  if (n == 0) return;
  scores.resize(static_cast<size_t>(groups) * n);
  // Pass 1: scores [G, n], walking each page's contiguous run of keys.
  int64_t col = 0;
  for (const Span& s : spans) {
    for (int64_t j = s.begin; j < s.end;) {
      const float* key = s.keys.at(j);
      const int64_t run = std::min(s.end - j, s.keys.page_tokens - j % s.keys.page_tokens);
      for (int64_t r = 0; r < run; ++r, key += dim, ++col) {
        for (int g = 0; g < groups; ++g) scores[g * n + col] = dot(q + g * dim, key, dim) * scale;
      }
      j += run;
    }
  }
  for (int g = 0; g < groups; ++g) {
    float* row = scores.data() + g * n;
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
          const float p = scores[g * n + col];
          float* a = part.acc.data() + static_cast<size_t>(g) * dim;
#pragma omp simd
          for (int i = 0; i < dim; ++i) a[i] += p * value[i];
        }
      }
      j += run;
    }
  }
}

// The stream a class of tokens is read from, or nullopt when masked.
std::optional<StreamView> source(const KvCache& cache, int seq, int layer, int head, const StreamRule& rule,
                                 bool keys, bool distant) {
  int from = layer;
  if (distant && rule.retention != Retention::Full) from = rule.distant_source;
  if (!distant && rule.retention == Retention::None) from = rule.proximal_source;
  if (from < 0) return std::nullopt;
  return keys ? cache.keys(seq, from, head) : cache.values(seq, from, head);
}

}  // namespace

void attention(const AttentionInput& in, const float* q, int64_t first_pos, int64_t tokens, float* out,
               AttentionStats* stats) {
  const KvCache& cache = *in.cache;
  const KvLayout& layout = cache.layout();
  const int kv_heads = layout.num_kv_heads;
  const int dim = layout.head_dim;
  const int heads = in.num_heads;
  const int groups = heads / kv_heads;
  const bool split = layout.recent_tokens > 0;
  std::vector<float>* my_gates = in.gates != nullptr ? &(*in.gates)[in.layer] : nullptr;
  if (my_gates != nullptr) my_gates->assign(static_cast<size_t>(tokens) * heads, 1.0f);
  int64_t distant_parts = 0, skipped = 0;

#pragma omp parallel reduction(+ : distant_parts, skipped)
  {
    Partials prox, dist;
    std::vector<float> scores;
    std::vector<Span> spans;
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t t = 0; t < tokens; ++t) {
      for (int h = 0; h < kv_heads; ++h) {
        const int64_t pos = first_pos + t;
        const float* q_group = q + (t * heads + static_cast<int64_t>(h) * groups) * dim;
        const StreamRule& krule = layout.key_rule(in.layer, h);
        const StreamRule& vrule = layout.value_rule(in.layer, h);
        prox.reset(groups, dim);
        dist.reset(groups, dim);
        // Token classes for query position pos (pod-method.md).
        const int64_t sink_end = split ? std::min(layout.sink_tokens, pos + 1) : 0;
        const int64_t recent_begin = split ? std::max(sink_end, pos - layout.recent_tokens + 1) : 0;
        auto add = [&](int64_t b, int64_t e, bool distant, Partials& part) {
          if (e <= b) return;
          auto k = source(cache, in.seq, in.layer, h, krule, true, distant);
          auto v = source(cache, in.seq, in.layer, h, vrule, false, distant);
          if (!k || !v) return;
          spans.assign(1, Span{b, e, *k, *v});
          accumulate(spans, q_group, groups, dim, in.scale, scores, part);
        };
        // Proximal: sink and recent spans together in one partial.
        {
          spans.clear();
          auto k = source(cache, in.seq, in.layer, h, krule, true, false);
          auto v = source(cache, in.seq, in.layer, h, vrule, false, false);
          if (sink_end > 0) spans.push_back(Span{0, sink_end, *k, *v});
          spans.push_back(Span{recent_begin, pos + 1, *k, *v});
          accumulate(spans, q_group, groups, dim, in.scale, scores, prox);
        }
        const bool has_distant = split && recent_begin > sink_end;
        const bool shared = krule.retention != Retention::Full;  // PoD non-anchor (or masked)
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
        if (has_distant && skipping < groups) add(sink_end, recent_begin, true, dist);
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
        }
      }
    }
  }
  if (stats != nullptr) {
    stats->distant_parts += distant_parts;
    stats->skipped_distant_parts += skipped;
  }
}

}  // namespace podkv
