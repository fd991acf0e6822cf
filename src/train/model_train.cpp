#include "train/model_train.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "model/model.h"
#include "train/ops.h"
#include "util/dtype.h"
#include "util/error.h"

namespace podkv::train {

namespace {

constexpr int kKinds = static_cast<int>(TensorKind::LmHead) + 1;

bool is_attention(TensorKind k) {
  return k == TensorKind::Wq || k == TensorKind::Wk || k == TensorKind::Wv || k == TensorKind::Wo ||
         k == TensorKind::Bq || k == TensorKind::Bk || k == TensorKind::Bv || k == TensorKind::QNorm ||
         k == TensorKind::KNorm;
}

}  // namespace

std::vector<bool> trainable_mask(const std::vector<TensorInfo>& tensors, const std::string& which) {
  std::vector<bool> mask(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorKind k = tensors[i].kind;
    if (which == "all") mask[i] = true;
    else if (which == "attention") mask[i] = is_attention(k);
    else if (which == "qk")
      mask[i] = k == TensorKind::Wq || k == TensorKind::Wk || k == TensorKind::Bq || k == TensorKind::Bk ||
                k == TensorKind::QNorm || k == TensorKind::KNorm;
    else throw Error("--train: '" + which + "' is not one of all, attention, qk");
  }
  return mask;
}

// Saved activations of one forward (shapes with n = batch · seq tokens).
template <typename T>
struct Transformer<T>::Activations {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> tokens;                 // [n]
  std::vector<T> cos_table, sin_table;         // [seq, d/2]
  std::vector<std::vector<T>> x_in;            // [L][n, hidden] residual entering the layer
  std::vector<std::vector<T>> xn1, r1;         // [L][n, hidden], [L][n]
  std::vector<std::vector<T>> q, k, v;         // [L][n, H·d], [L][n, Hkv·d] (RoPE applied to q, k)
  std::vector<std::vector<T>> q_raw, k_raw;    // Qwen3: [L][n, H·d], [L][n, Hkv·d] before the q/k norms
  std::vector<std::vector<T>> rq, rk;          // Qwen3: [L][n·H], [L][n·Hkv] those norms' 1 / rms
  std::vector<std::vector<T>> probs;           // [L][batch, H, seq, seq]
  std::vector<std::vector<T>> attn;            // [L][n, H·d]
  std::vector<std::vector<T>> x_mid;           // [L][n, hidden] after the attention residual
  std::vector<std::vector<T>> xn2, r2;         // [L][n, hidden], [L][n]
  std::vector<std::vector<T>> gate, up, h;     // [L][n, inter]
  std::vector<T> x_final, xn_final, r_final;   // [n, hidden], [n, hidden], [n]
  std::vector<T> logits;                       // [n, vocab]; becomes dlogits in the backward
  std::vector<T> proj;                         // [n, hidden] scratch: a sublayer's output
  // Backward scratch.
  std::vector<T> d_res, d_xn, d_attn, d_q, d_v, d_h, d_gate, d_up;
  std::vector<T> d_q_raw, d_k_raw;             // Qwen3: the gradients before the q/k norms
  std::vector<std::vector<T>> d_k;             // [L][n, Hkv·d]: anchors collect their block's gradient
};

template <typename T>
Transformer<T>::Transformer(const ModelConfig& config) : config_(config) {
  validate_config(config_, "model config");
  inv_freq_ = rope_inverse_frequencies(config_);
  build_tensors();
  set_pod(nullptr);
}

template <typename T>
Transformer<T>::~Transformer() = default;
template <typename T>
Transformer<T>::Transformer(Transformer&&) noexcept = default;

template <typename T>
void Transformer<T>::build_tensors() {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size;
  size_t offset = 0;
  index_.assign(static_cast<size_t>(kKinds) * (c.num_layers + 1), -1);
  auto add = [&](TensorKind kind, int layer, std::string name, std::vector<int64_t> shape) {
    size_t size = 1;
    for (int64_t s : shape) size *= static_cast<size_t>(s);
    const bool decay = shape.size() == 2;
    index_[static_cast<size_t>(kind) * (c.num_layers + 1) + layer + 1] = static_cast<int>(tensors_.size());
    tensors_.push_back({std::move(name), kind, layer, std::move(shape), offset, size, decay});
    offset += size;
  };
  add(TensorKind::Embedding, -1, "model.embed_tokens.weight", {c.vocab_size, h});
  for (int l = 0; l < c.num_layers; ++l) {
    add(TensorKind::AttnNorm, l, hf_layer_tensor(l, "input_layernorm.weight"), {h});
    add(TensorKind::Wq, l, hf_layer_tensor(l, "self_attn.q_proj.weight"), {c.q_dim(), h});
    add(TensorKind::Wk, l, hf_layer_tensor(l, "self_attn.k_proj.weight"), {c.kv_dim(), h});
    add(TensorKind::Wv, l, hf_layer_tensor(l, "self_attn.v_proj.weight"), {c.kv_dim(), h});
    if (c.attention_bias) {
      add(TensorKind::Bq, l, hf_layer_tensor(l, "self_attn.q_proj.bias"), {c.q_dim()});
      add(TensorKind::Bk, l, hf_layer_tensor(l, "self_attn.k_proj.bias"), {c.kv_dim()});
      add(TensorKind::Bv, l, hf_layer_tensor(l, "self_attn.v_proj.bias"), {c.kv_dim()});
    }
    if (c.qk_norm) {
      add(TensorKind::QNorm, l, hf_layer_tensor(l, "self_attn.q_norm.weight"), {c.head_dim});
      add(TensorKind::KNorm, l, hf_layer_tensor(l, "self_attn.k_norm.weight"), {c.head_dim});
    }
    add(TensorKind::Wo, l, hf_layer_tensor(l, "self_attn.o_proj.weight"), {h, c.q_dim()});
    add(TensorKind::MlpNorm, l, hf_layer_tensor(l, "post_attention_layernorm.weight"), {h});
    add(TensorKind::Gate, l, hf_layer_tensor(l, "mlp.gate_proj.weight"), {c.intermediate_size, h});
    add(TensorKind::Up, l, hf_layer_tensor(l, "mlp.up_proj.weight"), {c.intermediate_size, h});
    add(TensorKind::Down, l, hf_layer_tensor(l, "mlp.down_proj.weight"), {h, c.intermediate_size});
  }
  add(TensorKind::FinalNorm, -1, "model.norm.weight", {h});
  if (!c.tie_word_embeddings) add(TensorKind::LmHead, -1, "lm_head.weight", {c.vocab_size, h});
  params_.assign(offset, T(0));
  grads_.assign(offset, T(0));
  trainable_.assign(tensors_.size(), true);
}

template <typename T>
const TensorInfo* Transformer<T>::find(const std::string& name) const {
  for (const TensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

template <typename T>
int Transformer<T>::tensor_index(TensorKind kind, int layer) const {
  if (kind == TensorKind::LmHead && config_.tie_word_embeddings) kind = TensorKind::Embedding;
  return index_[static_cast<size_t>(kind) * (config_.num_layers + 1) + layer + 1];
}

template <typename T>
const T* Transformer<T>::tensor(TensorKind kind, int layer) const {
  const int i = tensor_index(kind, layer);
  return i < 0 ? nullptr : params_.data() + tensors_[i].offset;
}

template <typename T>
T* Transformer<T>::tensor_grad(TensorKind kind, int layer) {
  const int i = tensor_index(kind, layer);
  return i < 0 || !trainable_[i] ? nullptr : grads_.data() + tensors_[i].offset;
}

template <typename T>
void Transformer<T>::init_random(uint64_t seed, double std) {
  std::mt19937_64 rng(seed);
  // Box-Muller written out, so the weights do not depend on the standard library.
  auto normal = [&rng]() {
    const double u1 = (static_cast<double>(rng() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2 * M_PI * u2);
  };
  for (const TensorInfo& t : tensors_) {
    T* p = params_.data() + t.offset;
    const bool norm = t.kind == TensorKind::AttnNorm || t.kind == TensorKind::MlpNorm || t.kind == TensorKind::FinalNorm ||
                      t.kind == TensorKind::QNorm || t.kind == TensorKind::KNorm;
    const bool bias = t.kind == TensorKind::Bq || t.kind == TensorKind::Bk || t.kind == TensorKind::Bv;
    for (size_t i = 0; i < t.size; ++i) p[i] = norm ? T(1) : bias ? T(0) : static_cast<T>(normal() * std);
  }
}

template <typename T>
void Transformer<T>::copy_from(const Model& model) {
  const ModelConfig& m = model.config();
  check(m.hidden_size == config_.hidden_size && m.num_layers == config_.num_layers &&
            m.vocab_size == config_.vocab_size && m.num_heads == config_.num_heads &&
            m.num_kv_heads == config_.num_kv_heads && m.head_dim == config_.head_dim &&
            m.intermediate_size == config_.intermediate_size && m.attention_bias == config_.attention_bias &&
            m.qk_norm == config_.qk_norm &&
            m.tie_word_embeddings == config_.tie_word_embeddings,
        model.path() + ": the model's shape differs from the training config");
  std::vector<float> row;
  auto matrix = [&](const WeightMatrix& w, TensorKind kind, int layer) {
    T* dst = params_.data() + tensors_[index_[static_cast<size_t>(kind) * (config_.num_layers + 1) + layer + 1]].offset;
    row.resize(w.cols);
    for (int64_t r = 0; r < w.rows; ++r) {
      to_f32(w.dtype, static_cast<const uint8_t*>(w.data) + r * w.row_bytes(), row.data(), w.cols);
      for (int64_t c = 0; c < w.cols; ++c) dst[r * w.cols + c] = row[c];
    }
  };
  auto vec = [&](const std::vector<float>& v, TensorKind kind, int layer) {
    T* dst = params_.data() + tensors_[index_[static_cast<size_t>(kind) * (config_.num_layers + 1) + layer + 1]].offset;
    std::copy(v.begin(), v.end(), dst);
  };
  matrix(model.embedding(), TensorKind::Embedding, -1);
  for (int l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& w = model.layers()[l];
    vec(w.attn_norm, TensorKind::AttnNorm, l);
    matrix(w.wq, TensorKind::Wq, l);
    matrix(w.wk, TensorKind::Wk, l);
    matrix(w.wv, TensorKind::Wv, l);
    if (config_.attention_bias) {
      vec(w.bq, TensorKind::Bq, l);
      vec(w.bk, TensorKind::Bk, l);
      vec(w.bv, TensorKind::Bv, l);
    }
    if (config_.qk_norm) {
      vec(w.q_norm, TensorKind::QNorm, l);
      vec(w.k_norm, TensorKind::KNorm, l);
    }
    matrix(w.wo, TensorKind::Wo, l);
    vec(w.mlp_norm, TensorKind::MlpNorm, l);
    matrix(w.w_gate, TensorKind::Gate, l);
    matrix(w.w_up, TensorKind::Up, l);
    matrix(w.w_down, TensorKind::Down, l);
  }
  vec(model.final_norm(), TensorKind::FinalNorm, -1);
  if (!config_.tie_word_embeddings) matrix(model.lm_head(), TensorKind::LmHead, -1);
}

template <typename T>
void Transformer<T>::set_pod(const PodConfig* pod) {
  const int L = config_.num_layers, H = config_.num_kv_heads;
  anchor_.resize(static_cast<size_t>(L) * H);
  if (pod == nullptr) {
    pod_.reset();
    for (int l = 0; l < L; ++l)
      for (int h = 0; h < H; ++h) anchor_[l * H + h] = l;
    return;
  }
  const PodLayout layout(*pod, L, H);
  check(!pod->share_values, "pod config: share_values (shared distant values) is not supported in training");
  pod_ = *pod;
  for (int l = 0; l < L; ++l)
    for (int h = 0; h < H; ++h) anchor_[l * H + h] = layout.anchor(l, h);
}

template <typename T>
void Transformer<T>::set_trainable(const std::vector<bool>& mask) {
  check(mask.size() == tensors_.size(), "trainable mask: wrong number of tensors");
  trainable_ = mask;
}

template <typename T>
void Transformer<T>::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), T(0));
}

template <typename T>
void Transformer<T>::run_forward(const int32_t* tokens, int64_t batch, int64_t seq) {
  const ModelConfig& c = config_;
  check(seq <= c.max_position_embeddings, "sequence of " + std::to_string(seq) +
                                              " tokens is longer than the model's context (max_position_embeddings " +
                                              std::to_string(c.max_position_embeddings) + ")");
  const int64_t n = batch * seq, hid = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  const int L = c.num_layers;
  for (int64_t i = 0; i < n; ++i)
    check(tokens[i] >= 0 && tokens[i] < c.vocab_size, "token id " + std::to_string(tokens[i]) +
                                                          " is outside the vocabulary (" +
                                                          std::to_string(c.vocab_size) + " tokens)");
  if (!act_) act_ = std::make_unique<Activations>();
  Activations& a = *act_;
  if (a.batch != batch || a.seq != seq) {
    a.batch = batch, a.seq = seq;
    rope_tables<T>(inv_freq_, seq, a.cos_table, a.sin_table);
    auto per_layer = [L](std::vector<std::vector<T>>& v, int64_t size) {
      v.assign(L, std::vector<T>(static_cast<size_t>(size)));
    };
    per_layer(a.x_in, n * hid), per_layer(a.xn1, n * hid), per_layer(a.r1, n);
    per_layer(a.q, n * qd), per_layer(a.k, n * kvd), per_layer(a.v, n * kvd);
    if (c.qk_norm) {
      per_layer(a.q_raw, n * qd), per_layer(a.k_raw, n * kvd);
      per_layer(a.rq, n * c.num_heads), per_layer(a.rk, n * c.num_kv_heads);
    }
    per_layer(a.probs, batch * c.num_heads * seq * seq), per_layer(a.attn, n * qd);
    per_layer(a.x_mid, n * hid), per_layer(a.xn2, n * hid), per_layer(a.r2, n);
    per_layer(a.gate, n * inter), per_layer(a.up, n * inter), per_layer(a.h, n * inter);
    a.x_final.resize(n * hid), a.xn_final.resize(n * hid), a.r_final.resize(n);
    a.logits.resize(n * c.vocab_size);
  }
  a.tokens.assign(tokens, tokens + n);
  a.proj.resize(n * hid);
  T* proj = a.proj.data();
  embedding_forward(tensor(TensorKind::Embedding), tokens, n, hid, a.x_in[0].data());
  AttentionShape shape{batch, seq, c.num_heads, c.num_kv_heads, c.head_dim, 0, 0, attention_score_scale(c)};
  if (pod_) shape.sink = pod_->sink_tokens, shape.recent = pod_->recent_tokens;
  std::vector<const T*> distant(c.num_kv_heads);
  // The residual stream lives in the saved activations: x_in[l] -> x_mid[l] -> x_in[l + 1] (x_final after the last).
  for (int l = 0; l < L; ++l) {
    const T* x = a.x_in[l].data();
    rmsnorm_forward(x, tensor(TensorKind::AttnNorm, l), n, hid, c.rms_norm_eps, a.xn1[l].data(), a.r1[l].data());
    // Qwen3: the projections go to q_raw / k_raw, and each head's RMSNorm of them to q / k.
    T* q_out = c.qk_norm ? a.q_raw[l].data() : a.q[l].data();
    T* k_out = c.qk_norm ? a.k_raw[l].data() : a.k[l].data();
    linear_forward(a.xn1[l].data(), tensor(TensorKind::Wq, l), tensor(TensorKind::Bq, l), n, hid, qd, q_out);
    linear_forward(a.xn1[l].data(), tensor(TensorKind::Wk, l), tensor(TensorKind::Bk, l), n, hid, kvd, k_out);
    linear_forward(a.xn1[l].data(), tensor(TensorKind::Wv, l), tensor(TensorKind::Bv, l), n, hid, kvd, a.v[l].data());
    if (c.qk_norm) {
      rmsnorm_forward(q_out, tensor(TensorKind::QNorm, l), n * c.num_heads, c.head_dim, c.rms_norm_eps, a.q[l].data(),
                      a.rq[l].data());
      rmsnorm_forward(k_out, tensor(TensorKind::KNorm, l), n * c.num_kv_heads, c.head_dim, c.rms_norm_eps,
                      a.k[l].data(), a.rk[l].data());
    }
    rope_forward(a.q[l].data(), n, seq, c.num_heads, c.head_dim, a.cos_table.data(), a.sin_table.data(), c.rope_interleaved);
    rope_forward(a.k[l].data(), n, seq, c.num_kv_heads, c.head_dim, a.cos_table.data(), a.sin_table.data(), c.rope_interleaved);
    for (int h = 0; h < c.num_kv_heads; ++h) distant[h] = a.k[anchor_[l * c.num_kv_heads + h]].data();
    attention_forward(shape, a.q[l].data(), a.k[l].data(), distant.data(), a.v[l].data(), a.probs[l].data(), a.attn[l].data());
    linear_forward(a.attn[l].data(), tensor(TensorKind::Wo, l), static_cast<const T*>(nullptr), n, qd, hid, proj);
    T* mid = a.x_mid[l].data();
    for (int64_t i = 0; i < n * hid; ++i) mid[i] = x[i] + proj[i];
    rmsnorm_forward(mid, tensor(TensorKind::MlpNorm, l), n, hid, c.rms_norm_eps, a.xn2[l].data(), a.r2[l].data());
    linear_forward(a.xn2[l].data(), tensor(TensorKind::Gate, l), static_cast<const T*>(nullptr), n, hid, inter, a.gate[l].data());
    linear_forward(a.xn2[l].data(), tensor(TensorKind::Up, l), static_cast<const T*>(nullptr), n, hid, inter, a.up[l].data());
    swiglu_forward(a.gate[l].data(), a.up[l].data(), n * inter, a.h[l].data());
    linear_forward(a.h[l].data(), tensor(TensorKind::Down, l), static_cast<const T*>(nullptr), n, inter, hid, proj);
    T* next = l + 1 < L ? a.x_in[l + 1].data() : a.x_final.data();
    for (int64_t i = 0; i < n * hid; ++i) next[i] = mid[i] + proj[i];
  }
  rmsnorm_forward(a.x_final.data(), tensor(TensorKind::FinalNorm), n, hid, c.rms_norm_eps, a.xn_final.data(), a.r_final.data());
  linear_forward(a.xn_final.data(), tensor(TensorKind::LmHead), static_cast<const T*>(nullptr), n, hid,
                 static_cast<int64_t>(c.vocab_size), a.logits.data());
}

template <typename T>
LossStats Transformer<T>::forward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                                  T* logits_out) {
  run_forward(tokens, batch, seq);
  const int64_t n = batch * seq;
  LossStats s;
  if (targets != nullptr) {
    for (int64_t i = 0; i < n; ++i) s.count += targets[i] >= 0;
    s.loss_sum = cross_entropy(act_->logits.data(), targets, n, config_.vocab_size, 0.0,
                               static_cast<T*>(nullptr), &s.correct);
  }
  if (logits_out != nullptr) std::copy(act_->logits.begin(), act_->logits.end(), logits_out);
  return s;
}

template <typename T>
LossStats Transformer<T>::forward_backward(const int32_t* tokens, const int32_t* targets, int64_t batch,
                                           int64_t seq, double grad_scale) {
  check(targets != nullptr, "forward_backward: no targets");
  run_forward(tokens, batch, seq);
  const ModelConfig& c = config_;
  Activations& a = *act_;
  const int64_t n = batch * seq, hid = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  const int L = c.num_layers;
  LossStats s;
  for (int64_t i = 0; i < n; ++i) s.count += targets[i] >= 0;
  // The logits buffer becomes dlogits [n, vocab].
  s.loss_sum = cross_entropy(a.logits.data(), targets, n, c.vocab_size, grad_scale, a.logits.data(), &s.correct);

  auto zero = [](std::vector<T>& v, int64_t size) {
    v.resize(static_cast<size_t>(size));
    std::fill(v.begin(), v.end(), T(0));
  };
  zero(a.d_xn, n * hid);
  zero(a.d_res, n * hid);
  a.d_k.resize(L);
  for (int l = 0; l < L; ++l) zero(a.d_k[l], n * kvd);
  linear_backward(a.logits.data(), a.xn_final.data(), tensor(TensorKind::LmHead), n, hid,
                  static_cast<int64_t>(c.vocab_size), a.d_xn.data(), tensor_grad(TensorKind::LmHead), static_cast<T*>(nullptr));
  rmsnorm_backward(a.d_xn.data(), a.x_final.data(), tensor(TensorKind::FinalNorm), a.r_final.data(), n, hid,
                   a.d_res.data(), tensor_grad(TensorKind::FinalNorm));

  AttentionShape shape{batch, seq, c.num_heads, c.num_kv_heads, c.head_dim, 0, 0, attention_score_scale(c)};
  if (pod_) shape.sink = pod_->sink_tokens, shape.recent = pod_->recent_tokens;
  std::vector<const T*> distant(c.num_kv_heads);
  std::vector<T*> distant_grad(c.num_kv_heads);
  for (int l = L - 1; l >= 0; --l) {
    // MLP: x_out = x_mid + Down(swiglu(Gate x̂, Up x̂)), x̂ = rmsnorm(x_mid). d_res holds ∂/∂x_out.
    zero(a.d_h, n * inter);
    zero(a.d_gate, n * inter);
    zero(a.d_up, n * inter);
    zero(a.d_xn, n * hid);
    linear_backward(a.d_res.data(), a.h[l].data(), tensor(TensorKind::Down, l), n, inter, hid, a.d_h.data(),
                    tensor_grad(TensorKind::Down, l), static_cast<T*>(nullptr));
    swiglu_backward(a.d_h.data(), a.gate[l].data(), a.up[l].data(), n * inter, a.d_gate.data(), a.d_up.data());
    linear_backward(a.d_gate.data(), a.xn2[l].data(), tensor(TensorKind::Gate, l), n, hid, inter, a.d_xn.data(),
                    tensor_grad(TensorKind::Gate, l), static_cast<T*>(nullptr));
    linear_backward(a.d_up.data(), a.xn2[l].data(), tensor(TensorKind::Up, l), n, hid, inter, a.d_xn.data(),
                    tensor_grad(TensorKind::Up, l), static_cast<T*>(nullptr));
    rmsnorm_backward(a.d_xn.data(), a.x_mid[l].data(), tensor(TensorKind::MlpNorm, l), a.r2[l].data(), n, hid,
                     a.d_res.data(), tensor_grad(TensorKind::MlpNorm, l));

    // Attention: x_mid = x_in + Wo · attention(q, k, v). d_k[l] already holds
    // what the higher layers of l's blocks sent to its keys as their anchor.
    zero(a.d_attn, n * qd);
    zero(a.d_q, n * qd);
    zero(a.d_v, n * kvd);
    zero(a.d_xn, n * hid);
    linear_backward(a.d_res.data(), a.attn[l].data(), tensor(TensorKind::Wo, l), n, qd, hid, a.d_attn.data(),
                    tensor_grad(TensorKind::Wo, l), static_cast<T*>(nullptr));
    for (int h = 0; h < c.num_kv_heads; ++h) {
      const int anchor = anchor_[l * c.num_kv_heads + h];
      distant[h] = a.k[anchor].data();
      distant_grad[h] = a.d_k[anchor].data();
    }
    attention_backward(shape, a.d_attn.data(), a.q[l].data(), a.k[l].data(), distant.data(), a.v[l].data(),
                       a.probs[l].data(), a.d_q.data(), a.d_k[l].data(), distant_grad.data(), a.d_v.data());
    rope_backward(a.d_q.data(), n, seq, c.num_heads, c.head_dim, a.cos_table.data(), a.sin_table.data(), c.rope_interleaved);
    rope_backward(a.d_k[l].data(), n, seq, c.num_kv_heads, c.head_dim, a.cos_table.data(), a.sin_table.data(), c.rope_interleaved);
    const T* d_q_proj = a.d_q.data();
    const T* d_k_proj = a.d_k[l].data();
    if (c.qk_norm) {
      // Back through Qwen3's per-head norms: the projections' gradients in d_q_raw / d_k_raw.
      zero(a.d_q_raw, n * qd);
      zero(a.d_k_raw, n * kvd);
      rmsnorm_backward(a.d_q.data(), a.q_raw[l].data(), tensor(TensorKind::QNorm, l), a.rq[l].data(), n * c.num_heads,
                       c.head_dim, a.d_q_raw.data(), tensor_grad(TensorKind::QNorm, l));
      rmsnorm_backward(a.d_k[l].data(), a.k_raw[l].data(), tensor(TensorKind::KNorm, l), a.rk[l].data(),
                       n * c.num_kv_heads, c.head_dim, a.d_k_raw.data(), tensor_grad(TensorKind::KNorm, l));
      d_q_proj = a.d_q_raw.data(), d_k_proj = a.d_k_raw.data();
    }
    linear_backward(d_q_proj, a.xn1[l].data(), tensor(TensorKind::Wq, l), n, hid, qd, a.d_xn.data(),
                    tensor_grad(TensorKind::Wq, l), tensor_grad(TensorKind::Bq, l));
    linear_backward(d_k_proj, a.xn1[l].data(), tensor(TensorKind::Wk, l), n, hid, kvd, a.d_xn.data(),
                    tensor_grad(TensorKind::Wk, l), tensor_grad(TensorKind::Bk, l));
    linear_backward(a.d_v.data(), a.xn1[l].data(), tensor(TensorKind::Wv, l), n, hid, kvd, a.d_xn.data(),
                    tensor_grad(TensorKind::Wv, l), tensor_grad(TensorKind::Bv, l));
    rmsnorm_backward(a.d_xn.data(), a.x_in[l].data(), tensor(TensorKind::AttnNorm, l), a.r1[l].data(), n, hid,
                     a.d_res.data(), tensor_grad(TensorKind::AttnNorm, l));
  }
  if (T* d_embedding = tensor_grad(TensorKind::Embedding))
    embedding_backward(a.d_res.data(), a.tokens.data(), n, hid, d_embedding);
  return s;
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace podkv::train
