// The optimiser on the GPU: the squared gradient norm, the clip scale and
// AdamW (train::AdamW::step and clip_by_global_norm are the oracle).
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/train_kernels.h"

namespace podkv::cuda::train {

namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 1024;

__global__ void sum_squares_kernel(const float* g, int64_t n, double* sum) {
  __shared__ double partial[kThreads];
  double s = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    s += static_cast<double>(g[i]) * g[i];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(sum, partial[0]);
}

__global__ void scale_kernel(float* g, int64_t n, float factor) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < n) g[i] *= factor;
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, AdamWStep s) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n) return;
  const float mi = s.beta1 * m[i] + (1.0f - s.beta1) * g[i];
  const float vi = s.beta2 * v[i] + (1.0f - s.beta2) * g[i] * g[i];
  m[i] = mi, v[i] = vi;
  p[i] = p[i] * s.decay - s.step_size * mi / (sqrtf(vi) / s.correction2_sqrt + s.eps);
}

unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

void sum_squares(const float* g, int64_t n, double* sum, cudaStream_t stream) {
  if (n == 0) return;
  sum_squares_kernel<<<std::min(kMaxBlocks, blocks(n)), kThreads, 0, stream>>>(g, n, sum);
  check_launch("sum_squares_kernel");
}

void scale(float* g, int64_t n, float factor, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<<<blocks(n), kThreads, 0, stream>>>(g, n, factor);
  check_launch("scale_kernel");
}

void adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s, cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<blocks(n), kThreads, 0, stream>>>(p, g, m, v, n, s);
  check_launch("adamw_kernel");
}

}  // namespace podkv::cuda::train
