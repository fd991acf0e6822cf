// RMSNorm: one block per row; the sum of squares in double (rows of a few
// thousand floats would otherwise lose a few ulps against the CPU's double
// reference), the product in float32.
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

constexpr int kThreads = 256;

// With `residual`: x += residual first (the row is written back), then the norm of the sum.
__global__ void rms_norm_kernel(float* x, const float* residual, const float* weight, int64_t n, double eps,
                                float* out) {
  const int64_t r = blockIdx.x;
  float* xr = x + r * n;
  if (residual != nullptr)
    for (int64_t i = threadIdx.x; i < n; i += kThreads) xr[i] += residual[r * n + i];
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) ss += static_cast<double>(xr[i]) * xr[i];
  __shared__ double partial[kThreads];
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  const float inv = static_cast<float>(1.0 / sqrt(partial[0] / static_cast<double>(n) + eps));
  for (int64_t i = threadIdx.x; i < n; i += kThreads) out[r * n + i] = xr[i] * inv * weight[i];
}

}  // namespace

void rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, double eps, float* out,
              cudaStream_t stream) {
  if (rows == 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(const_cast<float*>(x), nullptr, weight, n, eps,
                                                                          out);
  check_launch("rms_norm_kernel");
}

void add_rms_norm(float* x, const float* residual, const float* weight, int64_t rows, int64_t n, double eps, float* out,
                  cudaStream_t stream) {
  if (rows == 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, residual, weight, n, eps, out);
  check_launch("rms_norm_kernel");
}

}  // namespace podkv::cuda
