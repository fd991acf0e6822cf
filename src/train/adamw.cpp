#include "train/adamw.h"

#include <algorithm>
#include <cmath>

namespace podkv::train {

double learning_rate(int64_t step, int64_t total, int64_t warmup, double lr, double min_lr) {
  if (warmup > 0 && step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t span = std::max<int64_t>(1, total - warmup);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(span));
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

double global_norm(const float* grads, const std::vector<ParamRange>& ranges) {
  double sum = 0;
  for (const ParamRange& r : ranges)
    for (size_t i = r.offset; i < r.offset + r.size; ++i) sum += static_cast<double>(grads[i]) * grads[i];
  return std::sqrt(sum);
}

double clip_by_global_norm(float* grads, const std::vector<ParamRange>& ranges, double max_norm) {
  const double norm = global_norm(grads, ranges);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / norm);
    for (const ParamRange& r : ranges)
      for (size_t i = r.offset; i < r.offset + r.size; ++i) grads[i] *= scale;
  }
  return norm;
}

AdamW::AdamW(size_t num_params, const AdamWOptions& options)
    : options_(options), m_(num_params, 0.0f), v_(num_params, 0.0f) {}

void AdamW::step(float* params, const float* grads, const std::vector<ParamRange>& ranges, double lr) {
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const float correction1 = static_cast<float>(1.0 - std::pow(b1, static_cast<double>(steps_)));
  const float correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(b2, static_cast<double>(steps_))));
  const float step_size = static_cast<float>(lr) / correction1;
  const float eps = static_cast<float>(options_.eps), fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2);
  for (const ParamRange& r : ranges) {
    const float decay = r.decay ? static_cast<float>(1.0 - lr * options_.weight_decay) : 1.0f;
    float* p = params + r.offset;
    const float* g = grads + r.offset;
    float* m = m_.data() + r.offset;
    float* v = v_.data() + r.offset;
#pragma omp parallel for simd if (r.size > 65536)
    for (size_t i = 0; i < r.size; ++i) {
      m[i] = fb1 * m[i] + (1.0f - fb1) * g[i];
      v[i] = fb2 * v[i] + (1.0f - fb2) * g[i] * g[i];
      // PyTorch's AdamW: decay first, then the Adam step with eps added to sqrt(v̂).
      p[i] = p[i] * decay - step_size * m[i] / (std::sqrt(v[i]) / correction2_sqrt + eps);
    }
  }
}

}  // namespace podkv::train
