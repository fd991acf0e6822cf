#include "model/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/elementwise.h"
#include "util/error.h"

namespace podkv {

Runner::Runner(const Model& model, KvCache& cache) : model_(model), cache_(cache) {
  const ModelConfig& c = model.config();
  const KvLayout& l = cache.layout();
  check(l.num_layers == c.num_layers && l.num_kv_heads == c.num_kv_heads && l.head_dim == c.head_dim,
        "kv cache layout (" + std::to_string(l.num_layers) + " layers, " + std::to_string(l.num_kv_heads) +
            " KV heads, head_dim " + std::to_string(l.head_dim) + ") does not match the model");
  gates_.resize(c.num_layers);
}

void Runner::forward(int seq, const std::vector<int32_t>& tokens, bool all_logits, std::vector<float>& logits) {
  const ModelConfig& c = model_.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  check(n > 0, "forward: no tokens");
  for (int32_t id : tokens)
    check(id >= 0 && id < c.vocab_size, "token id " + std::to_string(id) + " is outside the vocabulary (" +
                                             std::to_string(c.vocab_size) + " tokens)");
  const int64_t start = cache_.length(seq);
  if (start + n > c.max_position_embeddings)
    throw Error("sequence of " + std::to_string(start + n) + " tokens is longer than the model's context (" +
                std::to_string(c.max_position_embeddings) + " tokens, max_position_embeddings)");
  // Check the whole request's peak up front so a refusal changes nothing;
  // chunks then reserve and give back pages as they go.
  // SnapKV selects once, at the end of a sequence's first call (its prefill),
  // from the attention of the prefill's last queries; H2O scores every query.
  const KvLayout& layout = cache_.layout();
  const bool prefill = !cache_.prefill_done(seq);
  cache_.check_fits(seq, start + n, chunk_size_, prefill);
  score_from_ = INT64_MAX;
  if (layout.selection == Selection::HeavyHitters) score_from_ = 0;
  if (layout.selection == Selection::SnapKV && prefill) score_from_ = start + n - layout.observation_window;
  logits.assign(static_cast<size_t>(all_logits ? n : 1) * c.vocab_size, 0.0f);
  for (int64_t done = 0; done < n;) {
    const int64_t chunk = std::min(chunk_size_, n - done);
    const bool last = done + chunk == n;
    float* out = all_logits ? logits.data() + done * c.vocab_size : (last ? logits.data() : nullptr);
    forward_chunk(seq, tokens.data() + done, chunk, all_logits, out);
    done += chunk;
  }
  if (prefill) cache_.end_prefill(seq);
}

void Runner::forward_chunk(int seq, const int32_t* tokens, int64_t n, bool all_logits, float* logits) {
  const ModelConfig& c = model_.config();
  const int64_t hidden = c.hidden_size, d = c.head_dim;
  const int64_t start = cache_.length(seq);
  cache_.reserve(seq, start + n);
  x_.resize(n * hidden);
  xn_.resize(n * hidden);
  q_.resize(n * c.q_dim());
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  attn_.resize(n * c.q_dim());
  proj_.resize(n * hidden);
  gate_.resize(n * c.intermediate_size);
  up_.resize(n * c.intermediate_size);
  positions_.resize(n);
  for (int64_t t = 0; t < n; ++t) positions_[t] = start + t;

  const WeightMatrix& emb = model_.embedding();
  for (int64_t t = 0; t < n; ++t)
    to_f32(emb.dtype, static_cast<const uint8_t*>(emb.data) + tokens[t] * emb.row_bytes(), &x_[t * hidden], hidden);

  AttentionInput attention_input;
  attention_input.cache = &cache_;
  attention_input.seq = seq;
  attention_input.num_heads = c.num_heads;
  attention_input.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  attention_input.tau = tau_;
  attention_input.gates = &gates_;
  attention_input.score_from = score_from_;

  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& w = model_.layers()[layer];
    rms_norm(x_.data(), w.attn_norm.data(), n, hidden, c.rms_norm_eps, xn_.data());
    matmul(w.wq, xn_.data(), n, q_.data(), w.bq.empty() ? nullptr : w.bq.data());
    matmul(w.wk, xn_.data(), n, k_.data(), w.bk.empty() ? nullptr : w.bk.data());
    matmul(w.wv, xn_.data(), n, v_.data(), w.bv.empty() ? nullptr : w.bv.data());
    apply_rope(q_.data(), n, c.num_heads, c.head_dim, positions_.data(), model_.rope_inv_freq().data(), c.rope_interleaved);
    apply_rope(k_.data(), n, c.num_kv_heads, c.head_dim, positions_.data(), model_.rope_inv_freq().data(), c.rope_interleaved);
    // Keys and values into the streams this layer keeps.
    const KvLayout& layout = cache_.layout();
    for (int h = 0; h < c.num_kv_heads; ++h) {
      const bool keep_k = layout.key_rule(layer, h).retention != Retention::None;
      const bool keep_v = layout.value_rule(layer, h).retention != Retention::None;
      for (int64_t t = 0; t < n; ++t) {
        if (keep_k) std::memcpy(cache_.key_slot(seq, layer, h, start + t), &k_[(t * c.num_kv_heads + h) * d], d * sizeof(float));
        if (keep_v) std::memcpy(cache_.value_slot(seq, layer, h, start + t), &v_[(t * c.num_kv_heads + h) * d], d * sizeof(float));
      }
    }
    attention_input.layer = layer;
    attention(attention_input, q_.data(), start, n, attn_.data(), &stats_);
    if (observer_) observer_(seq, layer, q_.data(), start, n);
    matmul(w.wo, attn_.data(), n, proj_.data());
    for (int64_t i = 0; i < n * hidden; ++i) x_[i] += proj_[i];

    rms_norm(x_.data(), w.mlp_norm.data(), n, hidden, c.rms_norm_eps, xn_.data());
    matmul(w.w_gate, xn_.data(), n, gate_.data());
    matmul(w.w_up, xn_.data(), n, up_.data());
    silu_mul(gate_.data(), up_.data(), n * c.intermediate_size);
    matmul(w.w_down, gate_.data(), n, proj_.data());
    for (int64_t i = 0; i < n * hidden; ++i) x_[i] += proj_[i];
  }
  cache_.commit(seq, start + n);
  if (logits == nullptr) return;
  const int64_t first = all_logits ? 0 : n - 1;
  const int64_t rows = n - first;
  rms_norm(x_.data() + first * hidden, model_.final_norm().data(), rows, hidden, c.rms_norm_eps, xn_.data());
  matmul(model_.lm_head(), xn_.data(), rows, logits);
}

}  // namespace podkv
