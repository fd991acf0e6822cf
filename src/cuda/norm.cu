// RMSNorm: one block per row. The row is read once into registers (up to
// kThreads * kPerThread elements; longer rows are read again from memory),
// the sum of squares is taken in double (rows of a few thousand floats would
// otherwise lose a few ulps against the CPU's double reference) with one
// warp-shuffle reduction and one pass over the block's warp sums, and the
// product is float32. A decode step runs 2 L + 1 of these on one row each (65
// for Llama-3-8B), so the latency of the one row is what counts: one round of
// loads, two barriers.
#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

constexpr int kThreads = 512;
constexpr int kPerThread = 16;  // rows up to 8192 elements stay in registers

__device__ __forceinline__ void store(float* o, float v) { *o = v; }
__device__ __forceinline__ void store(uint16_t* o, float v) { *o = f32_to_bf16_bits(v); }

// With `residual`: x += residual first (the row is written back), then the norm of the sum. Out is
// float, or uint16_t for bf16 (the float32 product rounded to nearest even: split_bf16's bits).
template <typename Out>
__global__ void __launch_bounds__(kThreads)
    rms_norm_kernel(float* x, const float* residual, const float* weight, int64_t n, double eps, Out* out) {
  const int64_t r = blockIdx.x;
  float* xr = x + r * n;
  const float* res = residual != nullptr ? residual + r * n : nullptr;
  float v[kPerThread];
  double ss = 0.0;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * kThreads;
    v[k] = 0.0f;
    if (i < n) {
      v[k] = xr[i];
      if (res != nullptr) v[k] += res[i], xr[i] = v[k];
      ss += static_cast<double>(v[k]) * v[k];
    }
  }
  // The rest of a longer row (not kept in registers).
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kPerThread) * kThreads; i < n; i += kThreads) {
    float y = xr[i];
    if (res != nullptr) y += res[i], xr[i] = y;
    ss += static_cast<double>(y) * y;
  }
  __shared__ double warp_sums[kThreads / 32];
  __shared__ float inv_shared;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  ss = warp_sum_double(ss);
  if (lane == 0) warp_sums[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    double t = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
    t = warp_sum_double(t);
    if (lane == 0) inv_shared = static_cast<float>(1.0 / sqrt(t / static_cast<double>(n) + eps));
  }
  __syncthreads();
  const float inv = inv_shared;
  Out* o = out + r * n;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (i < n) store(o + i, v[k] * inv * weight[i]);
  }
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kPerThread) * kThreads; i < n; i += kThreads)
    store(o + i, xr[i] * inv * weight[i]);
}

// The one launch behind the three entry points: `residual` null for a plain norm.
template <typename Out>
void launch_rms_norm(float* x, const float* residual, const float* weight, int64_t rows, int64_t n, double eps,
                     Out* out, cudaStream_t stream) {
  if (rows == 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, residual, weight, n, eps, out);
  check_launch("rms_norm_kernel");
}

}  // namespace

// The kernel writes x only when a residual is given; the plain norms pass none.
void rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, double eps, float* out,
              cudaStream_t stream) {
  launch_rms_norm(const_cast<float*>(x), nullptr, weight, rows, n, eps, out, stream);
}

void rms_norm_bf16(const float* x, const float* weight, int64_t rows, int64_t n, double eps, uint16_t* out,
                   cudaStream_t stream) {
  launch_rms_norm(const_cast<float*>(x), nullptr, weight, rows, n, eps, out, stream);
}

void add_rms_norm(float* x, const float* residual, const float* weight, int64_t rows, int64_t n, double eps, float* out,
                  cudaStream_t stream) {
  launch_rms_norm(x, residual, weight, rows, n, eps, out, stream);
}

}  // namespace podkv::cuda
