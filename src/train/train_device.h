// Where training steps run: on the CPU (Transformer<float> and AdamW on host
// buffers) or on a CUDA GPU (CudaTrainer). The host model and optimiser stay
// the record a checkpoint is written from and a resume is read into, so a
// device copies its state back before a save (to_host) and takes it after a
// resume (from_host). The device reads the host model's PoD config and
// trainable mask at every step (set_pod / set_trainable on the model apply).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "train/adamw.h"
#include "train/model_train.h"

namespace podkv::train {

class TrainDevice {
 public:
  // `optimizer` may be null (evaluation only).
  TrainDevice(Transformer<float>& model, AdamW* optimizer) : model_(model), optimizer_(optimizer) {}
  virtual ~TrainDevice() = default;
  Transformer<float>& model() { return model_; }
  virtual std::string name() const = 0;  // "cpu", "cuda"
  // As Transformer::forward / forward_backward.
  virtual LossStats forward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                            float* logits_out = nullptr) = 0;
  virtual void zero_grads() = 0;
  virtual LossStats forward_backward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                                     double grad_scale) = 0;
  // The global norm of the ranges' gradients, which are then scaled down to
  // max_norm when above it (max_norm <= 0: never). As clip_by_global_norm.
  virtual double clip_grads(const std::vector<ParamRange>& ranges, double max_norm) = 0;
  // One AdamW step of the ranges at learning rate lr (the optimiser's step count advances).
  virtual void adamw_step(const std::vector<ParamRange>& ranges, double lr) = 0;
  // The gradients as float32 [params] (tests; the CPU's are the model's own).
  virtual std::vector<float> gradients() = 0;
  virtual void to_host() {}
  virtual void from_host() {}

 protected:
  Transformer<float>& model_;
  AdamW* optimizer_;
};

// Numeric precision of the GPU's matrix products (the CPU is always float32):
// "f32" (exact float32, the oracle's), "tf32", or "bf16" (tensor cores with
// bf16 inputs and float32 accumulation; weights, gradients and AdamW state
// stay float32 either way).
enum class MatmulPrecision { F32, TF32, BF16 };
MatmulPrecision parse_matmul_precision(const std::string& name);  // throws Error naming --precision

// device "cpu" or "cuda"; `optimizer` may be null for evaluation only.
// recompute (cuda only): keep each layer's input and recompute the rest of its
// activations in the backward (about a sixth of the activation memory, one more
// forward pass of time). Throws Error for an unknown device, a build without
// CUDA, no GPU, or recompute on the CPU.
std::unique_ptr<TrainDevice> make_train_device(const std::string& device, Transformer<float>& model,
                                               AdamW* optimizer, MatmulPrecision precision = MatmulPrecision::BF16,
                                               bool recompute = false);

// The CPU trainer behind the interface.
class CpuTrainDevice : public TrainDevice {
 public:
  using TrainDevice::TrainDevice;
  std::string name() const override { return "cpu"; }
  LossStats forward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                    float* logits_out) override {
    return model_.forward(tokens, targets, batch, seq, logits_out);
  }
  void zero_grads() override { model_.zero_grads(); }
  LossStats forward_backward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                             double grad_scale) override {
    return model_.forward_backward(tokens, targets, batch, seq, grad_scale);
  }
  double clip_grads(const std::vector<ParamRange>& ranges, double max_norm) override;
  void adamw_step(const std::vector<ParamRange>& ranges, double lr) override;
  std::vector<float> gradients() override { return model_.grads(); }
};

}  // namespace podkv::train
