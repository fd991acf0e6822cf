// The CPU backend: weights used in place from the memory-mapped model files,
// the KV pool in host memory, float32 activations; the oracle the other
// backends are tested against.
//
// Per layer, for the step's R rows (tokens of every batch entry together):
//   x̂ = rms_norm(x)                         x: [R, hidden]
//   q = x̂ Wqᵀ (+bq) [R, H·d], k, v = x̂ Wk/vᵀ (+b) [R, H_kv·d]; RoPE on q, k
//   k, v -> cache (each entry's rows at its positions)
//   o = attention(q, cache) [R, H·d] per entry through its pages; x += o Woᵀ
//   x += (silu(x̂' Wgᵀ) ⊙ x̂' Wuᵀ) Wdᵀ        with x̂' = rms_norm(x)
// then logits = rms_norm(x) · lm_headᵀ for the requested rows [n, vocab].
// Every matmul runs over all R rows at once: weights are read once per step.
#pragma once

#include "backend/backend.h"

namespace podkv {

class CpuBackend : public Backend {
 public:
  // Throws Error for a model without weights (Model::shapes_only).
  explicit CpuBackend(const Model& model);
  std::string name() const override { return "cpu"; }
  const Model& model() const override { return model_; }
  std::unique_ptr<KvPool> create_pool(KvCache& cache) override;
  void forward(const ForwardStep& step, const KvView& view, ForwardOutput& out) override;
  void set_layer_observer(LayerObserver observer) override { observer_ = std::move(observer); }

 private:
  const Model& model_;
  LayerObserver observer_;
  // Scratch, reused across steps: [R, hidden], [R, H·d], [R, H_kv·d], [R, inter], [L, R·H].
  std::vector<float> x_, xn_, q_, k_, v_, attn_, proj_, gate_, up_, gates_;
};

}  // namespace podkv
