// Training on one CUDA GPU: the Transformer<float> forward and exact backward
// of model_train.cpp on device buffers (float32 weights, gradients, AdamW
// moments and activations), its matrix products through cuBLAS in the chosen
// MatmulPrecision, and the per-token ops as kernels of src/cuda/train_*.cu.
//
// Attention, with bf16 or tf32 products and head_dim 64 or 128, is fused on
// the tensor cores (src/cuda/train_flash.cu: bf16 operands, nothing of size
// seq² stored). Otherwise (float32 products: the CPU's arithmetic, for the
// tests; other head sizes) it materialises the scores of a chunk of whole
// sequences at a time ([sequences, heads, seq, seq] float32, two buffers: the
// layer's keys and, for PoD, the anchor's), saves only each row's
// log-sum-exp and recomputes the probabilities in the backward. The chunk is
// as many sequences as fit in kScoreBudgetBytes (at least one).
//
// Only built with CUDA (PODKV_HAVE_CUDA); make_train_device says so otherwise.
#pragma once

#include <memory>

#include "train/train_device.h"

namespace podkv::train {

class CudaTrainer : public TrainDevice {
 public:
  static constexpr size_t kScoreBudgetBytes = size_t{8} << 30;

  // Uploads the model's parameters (and the optimiser's moments when given).
  // Throws Error when there is no GPU or the weights do not fit.
  // recompute: keep only each layer's input (and its keys, read by the layers
  // they anchor) and recompute the layer's other activations in the backward.
  CudaTrainer(Transformer<float>& model, AdamW* optimizer, MatmulPrecision precision, bool recompute = false);
  ~CudaTrainer() override;

  std::string name() const override { return "cuda"; }
  LossStats forward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                    float* logits_out) override;
  void zero_grads() override;
  LossStats forward_backward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                             double grad_scale) override;
  double clip_grads(const std::vector<ParamRange>& ranges, double max_norm) override;
  void adamw_step(const std::vector<ParamRange>& ranges, double lr) override;
  std::vector<float> gradients() override;
  void to_host() override;
  void from_host() override;

 private:
  struct State;
  void run_forward(const int32_t* tokens, int64_t batch, int64_t seq);
  // Layer l from x_in[l]; the residual output x_in[l + 1] (or x_final) unless recomputing.
  void forward_layer(int l, bool recomputing);
  void attention(int layer, bool backward);
  void flash_attention(int layer, bool backward);
  LossStats head_and_loss(const int32_t* targets, double grad_scale, bool backward, float* logits_out);
  void backward_layers();

  std::unique_ptr<State> s_;
};

}  // namespace podkv::train
