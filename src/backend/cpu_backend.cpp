#include "backend/cpu_backend.h"

#include <algorithm>
#include <cmath>

#include "ops/elementwise.h"
#include "ops/kv_write.h"
#include "ops/matmul.h"
#include "util/error.h"

namespace podkv {

CpuBackend::CpuBackend(const Model& model) : model_(model) {
  check(model.has_weights(), model.path() + ": the cpu backend needs the model's weights (random weights are a cuda option)");
}

std::unique_ptr<KvPool> CpuBackend::create_pool(KvCache& cache) {
  auto pool = std::make_unique<HostKvPool>(cache.num_pages(), cache.page_bytes(), cache.entry_bytes());
  cache.attach_pool(pool.get());
  return pool;
}

void CpuBackend::forward(const ForwardStep& step, const KvView& view, ForwardOutput& out) {
  const ModelConfig& c = model_.config();
  const int64_t n = step.rows, hidden = c.hidden_size;
  const AttentionBatch& batch = step.attention;
  x_.resize(n * hidden);
  xn_.resize(n * hidden);
  q_.resize(n * c.q_dim());
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  attn_.resize(n * c.q_dim());
  proj_.resize(n * hidden);
  gate_.resize(n * c.intermediate_size);
  up_.resize(n * c.intermediate_size);
  gates_.resize(static_cast<size_t>(c.num_layers) * n * c.num_heads);
  out.scores.assign(view.num_groups > 0 ? view.score_indptr[view.num_seqs * view.num_groups] : 0, 0.0f);

  const WeightMatrix& emb = model_.embedding();
  for (int64_t t = 0; t < n; ++t)
    to_f32(emb.dtype, static_cast<const uint8_t*>(emb.data) + step.tokens[t] * emb.row_bytes(), &x_[t * hidden], hidden);

  AttentionParams params;
  params.num_heads = c.num_heads;
  params.scale = static_cast<float>(attention_score_scale(c));
  params.tau = step.tau;
  AttentionOutputs outputs;
  outputs.out = attn_.data();
  outputs.gates = gates_.data();
  outputs.scores = out.scores.empty() ? nullptr : out.scores.data();
  outputs.stats = &out.stats;

  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& w = model_.layers()[layer];
    rms_norm(x_.data(), w.attn_norm.data(), n, hidden, c.rms_norm_eps, xn_.data());
    matmul(w.wq, xn_.data(), n, q_.data(), w.bq.empty() ? nullptr : w.bq.data());
    matmul(w.wk, xn_.data(), n, k_.data(), w.bk.empty() ? nullptr : w.bk.data());
    matmul(w.wv, xn_.data(), n, v_.data(), w.bv.empty() ? nullptr : w.bv.data());
    if (!w.q_norm.empty()) {
      // Qwen3: every head of q [n, H, d] and k [n, H_kv, d] RMS-normalized before RoPE.
      rms_norm(q_.data(), w.q_norm.data(), n * c.num_heads, c.head_dim, c.rms_norm_eps, q_.data());
      rms_norm(k_.data(), w.k_norm.data(), n * c.num_kv_heads, c.head_dim, c.rms_norm_eps, k_.data());
    }
    apply_rope(q_.data(), n, c.num_heads, c.head_dim, step.positions, model_.rope_inv_freq().data(), c.rope_interleaved);
    apply_rope(k_.data(), n, c.num_kv_heads, c.head_dim, step.positions, model_.rope_inv_freq().data(),
               c.rope_interleaved);
    kv_write(view, layer, batch.num_seqs, batch.row_begin, batch.first_pos, k_.data(), v_.data());
    params.layer = layer;
    attention(view, batch, params, q_.data(), outputs);
    if (observer_) {
      for (int b = 0; b < batch.num_seqs; ++b) {
        const int64_t r0 = batch.row_begin[b];
        observer_(LayerObservation{step.seqs[b], b, layer, q_.data() + r0 * c.q_dim(), batch.first_pos[b],
                                   batch.row_begin[b + 1] - r0, &view});
      }
    }
    matmul(w.wo, attn_.data(), n, proj_.data());
    for (int64_t i = 0; i < n * hidden; ++i) x_[i] += proj_[i];

    rms_norm(x_.data(), w.mlp_norm.data(), n, hidden, c.rms_norm_eps, xn_.data());
    matmul(w.w_gate, xn_.data(), n, gate_.data());
    matmul(w.w_up, xn_.data(), n, up_.data());
    silu_mul(gate_.data(), up_.data(), n * c.intermediate_size);
    matmul(w.w_down, gate_.data(), n, proj_.data());
    for (int64_t i = 0; i < n * hidden; ++i) x_[i] += proj_[i];
  }
  const int64_t rows = step.num_logit_rows;
  out.logits.resize(static_cast<size_t>(rows) * c.vocab_size);
  if (rows == 0) return;
  // Gather the rows that want logits, then one matmul over them.
  for (int64_t i = 0; i < rows; ++i) std::copy_n(&x_[step.logit_rows[i] * hidden], hidden, &proj_[i * hidden]);
  rms_norm(proj_.data(), model_.final_norm().data(), rows, hidden, c.rms_norm_eps, xn_.data());
  matmul(model_.lm_head(), xn_.data(), rows, out.logits.data());
}

}  // namespace podkv
