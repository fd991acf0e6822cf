#include "kv_scenario.h"

#include <algorithm>
#include <climits>

#include "reference.h"
#include "util/error.h"

namespace podkv::backend_test {

std::string KvCaseSpec::describe() const {
  std::string kv, add;
  for (const EntrySpec& e : entries) {
    kv += (kv.empty() ? "" : ",") + std::to_string(e.history + e.tokens);
    add += (add.empty() ? "" : ",") + std::to_string(e.tokens);
  }
  char tau_text[16];
  std::snprintf(tau_text, sizeof tau_text, "%g", tau);
  const KvCaseSpec defaults;
  return policy + " " + kv_dtype_name(dtype) + " page=" + std::to_string(page_tokens) + " H=" +
         std::to_string(geometry.heads) + "/" + std::to_string(geometry.kv_heads) + " d=" +
         std::to_string(geometry.dim) + " kv=" + kv + " new=" + add + (tau < 1.0f ? std::string(" tau=") + tau_text : "") +
         (gates || tau < 1.0f ? "" : " no-gates") +
         (sink_tokens != defaults.sink_tokens || recent_tokens != defaults.recent_tokens
              ? " sink=" + std::to_string(sink_tokens) + " recent=" + std::to_string(recent_tokens)
              : "");
}

KvPolicyOptions case_policy_options(const KvCaseSpec& spec) {
  const std::string& policy = spec.policy;
  const KvGeometry& g = spec.geometry;
  KvPolicyOptions o;
  o.policy = policy;
  o.sink_tokens = spec.sink_tokens;
  o.recent_tokens = spec.recent_tokens;
  o.budget = 16;
  o.observation_window = 8;
  o.pool_kernel = 3;
  if (policy == "pod" || policy == "pod+snapkv") {
    // Head-wise blocks that differ per KV head (layers 0..3).
    static const std::vector<std::vector<int>> patterns = {{0, 2}, {0, 1}, {0, 3}, {0}};
    PodConfig pod;
    pod.sink_tokens = static_cast<int>(o.sink_tokens);
    pod.recent_tokens = static_cast<int>(o.recent_tokens);
    for (int h = 0; h < g.kv_heads; ++h) {
      std::vector<int> anchors;
      for (int a : patterns[h % patterns.size()]) if (a < g.layers) anchors.push_back(a);
      pod.anchors.push_back(anchors);
    }
    o.pod = pod;
  }
  return o;
}

KvScenario::KvScenario(BackendOps& ops, const KvCaseSpec& spec, uint64_t seed) : ops_(ops), spec_(spec), rng_(seed) {
  const KvGeometry& g = spec.geometry;
  ModelConfig config;
  config.num_layers = g.layers;
  config.num_kv_heads = g.kv_heads;
  config.num_heads = g.heads;
  config.head_dim = g.dim;
  const KvLayout layout = make_kv_layout(config, case_policy_options(spec));
  // Room for every entry's dense pages in all four stream kinds, plus one partly filled page each.
  int64_t pages = 0;
  for (const EntrySpec& e : spec.entries)
    pages += 4LL * g.layers * g.kv_heads * ((e.history + e.tokens) / spec.page_tokens + 2);
  const size_t page_bytes = kv_entry_bytes(spec.dtype, g.dim) * spec.page_tokens;
  cache_ = std::make_unique<KvCache>(layout, pages * page_bytes, spec.page_tokens, spec.dtype);
  pool_ = ops.create_kv_pool(*cache_);

  const int B = static_cast<int>(spec.entries.size());
  keys_.resize(B);
  values_.resize(B);
  kept_.resize(B);
  for (int b = 0; b < B; ++b) {
    const EntrySpec& e = spec.entries[b];
    seqs_.push_back(cache_->add_sequence());
    new_lengths_.push_back(e.history + e.tokens);
    const size_t n = static_cast<size_t>(g.layers) * g.kv_heads * new_lengths_[b] * g.dim;
    keys_[b] = exact_kv_values(rng_, n, g.dim);
    values_[b] = exact_kv_values(rng_, n, g.dim);
    grow(b, e.history);
    if (!e.prefill) cache_->end_prefill(seqs_[b]);
  }

  // The step: every entry reserved, one view over all of them, and which
  // queries add to the selection scores (as engine/runner.cpp decides).
  row_begin_.assign(1, 0);
  for (int b = 0; b < B; ++b) {
    const EntrySpec& e = spec.entries[b];
    cache_->reserve(seqs_[b], new_lengths_[b]);
    first_pos_.push_back(e.history);
    row_begin_.push_back(row_begin_.back() + e.tokens);
    int64_t from = INT64_MAX;
    if (layout.selection == Selection::HeavyHitters) from = 0;
    if (layout.selection == Selection::SnapKV && e.prefill) from = new_lengths_[b] - layout.observation_window;
    score_from_.push_back(from);
    kept_[b].resize(layout.num_selection_groups);
    for (int grp = 0; grp < layout.num_selection_groups; ++grp) {
      const std::vector<int64_t> positions = cache_->kept_positions(seqs_[b], grp);
      kept_[b][grp].insert(positions.begin(), positions.end());
    }
  }
  view_builder_.build(*cache_, pool_->base(), seqs_, new_lengths_);
  batch_.num_seqs = B;
  batch_.row_begin = row_begin_.data();
  batch_.first_pos = first_pos_.data();
  batch_.score_from = score_from_.data();
}

// Grows entry b to `to` tokens in chunks of up to 64, each one step of its own.
void KvScenario::grow(int b, int64_t to) {
  const KvGeometry& g = spec_.geometry;
  const int seq = seqs_[b];
  KvViewBuilder builder;
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (int64_t len = 0; len < to;) {
    const int64_t n = std::min<int64_t>(64, to - len);
    cache_->reserve(seq, len + n);
    const KvView& view = builder.build(*cache_, pool_->base(), {seq}, {len + n});
    const int64_t row_begin[2] = {0, n}, first_pos[1] = {len};
    AttentionBatch batch;
    batch.num_seqs = 1;
    batch.row_begin = row_begin;
    batch.first_pos = first_pos;
    ops_.set_step(view, batch);
    std::vector<float> k(n * g.kv_heads * g.dim), v(k.size());
    DeviceBuffer d_k(ops_, k.size() * sizeof(float)), d_v(ops_, v.size() * sizeof(float));
    for (int l = 0; l < g.layers; ++l) {
      for (int64_t t = 0; t < n; ++t)
        for (int h = 0; h < g.kv_heads; ++h) {
          std::copy_n(key(b, l, h, len + t), g.dim, &k[(t * g.kv_heads + h) * g.dim]);
          std::copy_n(value(b, l, h, len + t), g.dim, &v[(t * g.kv_heads + h) * g.dim]);
        }
      d_k.upload(k.data(), k.size() * sizeof(float));
      d_v.upload(v.data(), v.size() * sizeof(float));
      ops_.kv_write(l, d_k.as<float>(), d_v.as<float>());
    }
    ops_.synchronize();
    // Random attention scores stand in for the ones attention would add: they
    // only decide which tokens H2O and SnapKV keep.
    for (int grp = 0; grp < cache_->layout().num_selection_groups; ++grp) {
      std::vector<float> region(cache_->score_region_size(seq, grp));
      for (float& s : region) s = uniform(rng_);
      cache_->add_scores(seq, grp, region.data());
    }
    cache_->commit(seq, len + n);
    len += n;
  }
}

std::vector<float> KvScenario::step_rows(bool keys, int layer) const {
  const KvGeometry& g = spec_.geometry;
  std::vector<float> rows(static_cast<size_t>(this->rows()) * g.kv_heads * g.dim);
  for (int b = 0; b < batch_.num_seqs; ++b)
    for (int64_t r = row_begin_[b]; r < row_begin_[b + 1]; ++r)
      for (int h = 0; h < g.kv_heads; ++h) {
        const int64_t pos = first_pos_[b] + (r - row_begin_[b]);
        std::copy_n(keys ? key(b, layer, h, pos) : value(b, layer, h, pos), g.dim, &rows[(r * g.kv_heads + h) * g.dim]);
      }
  return rows;
}

std::vector<uint8_t> KvScenario::download_pool() const {
  const KvView& v = view();
  int64_t pages = 0;
  for (int64_t i = 0; i < v.page_indptr[v.stream(v.num_seqs, 0, 0, 0)]; ++i)
    pages = std::max<int64_t>(pages, v.page_indices[i] + 1);
  std::vector<uint8_t> bytes(pages * v.page_bytes);
  ops_.download(bytes.data(), v.pool, bytes.size());
  return bytes;
}

}  // namespace podkv::backend_test
