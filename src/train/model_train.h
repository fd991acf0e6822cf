// A Llama-family transformer for training on the CPU: parameters and their
// gradients in two flat buffers (one tensor after the other, Hugging Face
// names), the forward pass with saved activations, and the exact backward.
// Attention is dense, or PoD (pod-method.md) when a PodConfig is set: the
// non-anchor layers read distant keys from their block's anchor, and the
// anchor's keys collect the gradient of every layer of the block.
//
// Templated on the scalar: float trains; double runs the finite-difference
// gradient checks. The same forward in float gives the inference Runner's
// logits (tests/test_train_model.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kv/pod_config.h"
#include "model/config.h"

namespace podkv {
class Model;
}

namespace podkv::train {

// QNorm / KNorm: Qwen3's per-head q and k norm weights [head_dim].
enum class TensorKind { Embedding, AttnNorm, Wq, Wk, Wv, Bq, Bk, Bv, QNorm, KNorm, Wo, MlpNorm, Gate, Up, Down, FinalNorm, LmHead };

struct TensorInfo {
  std::string name;             // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  TensorKind kind = TensorKind::Embedding;
  int layer = -1;               // -1 for embedding, final norm, lm head
  std::vector<int64_t> shape;   // row-major, as PyTorch
  size_t offset = 0, size = 0;  // into params() / grads()
  bool decay = false;           // AdamW weight decay applies (matrices, not norms or biases)
};

// Which parameters train: "all", "attention" (q, k, v, o and their biases) or
// "qk" (q and k projections and biases). Throws Error naming --train otherwise.
std::vector<bool> trainable_mask(const std::vector<TensorInfo>& tensors, const std::string& which);

// Loss statistics of one forward: Σ loss over counted targets, how many, and
// how many had their target as the argmax.
struct LossStats {
  double loss_sum = 0;
  int64_t count = 0;
  int64_t correct = 0;
  double mean() const { return count > 0 ? loss_sum / static_cast<double>(count) : 0.0; }
  LossStats& operator+=(const LossStats& o) {
    loss_sum += o.loss_sum, count += o.count, correct += o.correct;
    return *this;
  }
};

template <typename T>
class Transformer {
 public:
  // Parameters zero; call init_random or copy_from. Validates the config.
  explicit Transformer(const ModelConfig& config);
  ~Transformer();
  Transformer(Transformer&&) noexcept;

  const ModelConfig& config() const { return config_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;  // nullptr when absent
  // Index into tensors() of (kind, layer), -1 when absent; a tied LM head is the embedding.
  int tensor_index(TensorKind kind, int layer = -1) const;
  // The layer whose keys KV head h of `layer` reads for distant tokens (the layer itself when dense).
  int anchor(int layer, int kv_head) const { return anchor_[static_cast<size_t>(layer) * config_.num_kv_heads + kv_head]; }
  std::vector<T>& params() { return params_; }
  const std::vector<T>& params() const { return params_; }
  std::vector<T>& grads() { return grads_; }

  // Matrices and embeddings from N(0, std²) (deterministic given seed), norms 1, biases 0.
  void init_random(uint64_t seed, double std);
  // The weights of a loaded model, widened to T. Throws Error when the configs differ.
  void copy_from(const Model& model);

  // PoD attention from now on (null: dense). Validated against the model.
  void set_pod(const PodConfig* pod);
  const std::optional<PodConfig>& pod() const { return pod_; }
  // Per tensor: whether its gradient is computed (frozen tensors get none).
  void set_trainable(const std::vector<bool>& mask);
  const std::vector<bool>& trainable() const { return trainable_; }

  void zero_grads();
  // tokens, targets: [batch, seq]; targets[i] = -1 counts no loss. Returns the
  // loss statistics; logits_out (optional) gets [batch · seq, vocab].
  LossStats forward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                    T* logits_out = nullptr);
  // Forward, then grads += ∂(grad_scale · Σ loss)/∂params for trainable tensors.
  LossStats forward_backward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                             double grad_scale);

 private:
  struct Activations;
  void build_tensors();
  void run_forward(const int32_t* tokens, int64_t batch, int64_t seq);
  const T* tensor(TensorKind kind, int layer = -1) const;
  T* tensor_grad(TensorKind kind, int layer = -1);

  ModelConfig config_;
  std::vector<TensorInfo> tensors_;
  std::vector<int> index_;  // [kind * (L + 1) + layer + 1] -> tensor index, -1 when absent
  std::vector<T> params_, grads_;
  std::vector<bool> trainable_;
  std::optional<PodConfig> pod_;
  std::vector<int> anchor_;  // [layer * H_kv + h] -> anchor layer
  std::vector<float> inv_freq_;
  std::unique_ptr<Activations> act_;
};

extern template class Transformer<float>;
extern template class Transformer<double>;

}  // namespace podkv::train
