#include "model/compare.h"

#include <algorithm>
#include <cmath>

#include "kv/kv_cache.h"
#include "engine/runner.h"
#include "util/error.h"

namespace podkv {
namespace {

std::vector<float> all_logits(const Model& model, const std::vector<int32_t>& ids) {
  const ModelConfig& c = model.config();
  const size_t bytes = (ids.size() + 32) * c.dense_kv_bytes_per_token(4) * 2;
  KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), bytes, 16);
  Runner runner(model, cache);
  std::vector<float> logits;
  runner.forward(cache.add_sequence(), ids, true, logits);
  return logits;
}

}  // namespace

LogitsComparison compare_logits(const Model& reference, const Model& candidate, const std::vector<int32_t>& ids) {
  const int64_t vocab = reference.config().vocab_size;
  check(candidate.config().vocab_size == vocab,
        candidate.path() + ": vocabulary of " + std::to_string(candidate.config().vocab_size) + " tokens, the reference " +
            reference.path() + " has " + std::to_string(vocab));
  check(!ids.empty(), "compare_logits: no tokens");
  const std::vector<float> ref = all_logits(reference, ids), got = all_logits(candidate, ids);
  LogitsComparison r;
  r.tokens = static_cast<int64_t>(ids.size());
  double max_diff = 0, max_ref = 0, sq = 0;
  int64_t agree = 0;
  for (int64_t t = 0; t < r.tokens; ++t) {
    const float* a = got.data() + t * vocab;
    const float* b = ref.data() + t * vocab;
    for (int64_t v = 0; v < vocab; ++v) {
      const double d = static_cast<double>(a[v]) - b[v];
      max_diff = std::max(max_diff, std::fabs(d));
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(b[v])));
      sq += d * d;
    }
    agree += std::max_element(a, a + vocab) - a == std::max_element(b, b + vocab) - b;
  }
  r.max_relative_error = max_ref > 0 ? max_diff / max_ref : max_diff;
  r.rms_error = std::sqrt(sq / static_cast<double>(r.tokens * vocab));
  r.top1_agreement = static_cast<double>(agree) / static_cast<double>(r.tokens);
  return r;
}

}  // namespace podkv
