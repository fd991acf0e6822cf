// Optimisation on flat float32 buffers: AdamW with decoupled weight decay,
// the warmup + cosine learning-rate schedule, and clipping by global norm.
// Plain buffers and per-tensor ranges, so a CUDA version takes the same state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace podkv::train {

// A contiguous range of the parameter buffer that the optimiser updates
// (one tensor); `decay`: weight decay applies to it.
struct ParamRange {
  size_t offset = 0, size = 0;
  bool decay = false;
};

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

// Learning rate at `step` (0-based) of `total`: linear warmup from lr/warmup
// to lr over `warmup` steps, then a cosine from lr down to min_lr at `total`.
double learning_rate(int64_t step, int64_t total, int64_t warmup, double lr, double min_lr);

// sqrt(Σ g²) over the ranges (in double).
double global_norm(const float* grads, const std::vector<ParamRange>& ranges);
// Scales the ranges' gradients by max_norm / norm when norm > max_norm (max_norm <= 0: never).
// Returns the norm before clipping.
double clip_by_global_norm(float* grads, const std::vector<ParamRange>& ranges, double max_norm);

class AdamW {
 public:
  AdamW(size_t num_params, const AdamWOptions& options);
  // One update of the ranges: p -= lr·wd·p (decay ranges), then
  // p -= lr · m̂ / (sqrt(v̂) + eps) with bias-corrected moments.
  void step(float* params, const float* grads, const std::vector<ParamRange>& ranges, double lr);

  int64_t steps() const { return steps_; }
  const AdamWOptions& options() const { return options_; }
  std::vector<float>& first_moment() { return m_; }   // [num_params]
  std::vector<float>& second_moment() { return v_; }  // [num_params]
  const std::vector<float>& first_moment() const { return m_; }
  const std::vector<float>& second_moment() const { return v_; }
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  AdamWOptions options_;
  std::vector<float> m_, v_;
  int64_t steps_ = 0;
};

}  // namespace podkv::train
