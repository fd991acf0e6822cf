// Cross-entropy over the vocabulary on the GPU, one block per row (the oracle
// is train::cross_entropy): the loss statistics in doubles, and the logits
// turned into their gradient in place.
#include <cfloat>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/train_kernels.h"

namespace podkv::cuda::train {

namespace {

constexpr int kThreads = 256;

// The block's maximum and the first index holding it.
__device__ void block_argmax(float& value, int64_t& index) {
  __shared__ float values[kThreads / 32];
  __shared__ int64_t indices[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, value, o);
    const int64_t i = __shfl_xor_sync(0xffffffffu, index, o);
    if (v > value || (v == value && i < index)) value = v, index = i;
  }
  if (threadIdx.x % 32 == 0) values[threadIdx.x / 32] = value, indices[threadIdx.x / 32] = index;
  __syncthreads();
  value = values[0], index = indices[0];
  for (int w = 1; w < kThreads / 32; ++w)
    if (values[w] > value || (values[w] == value && indices[w] < index)) value = values[w], index = indices[w];
  __syncthreads();
}

__device__ double block_sum_double(double v) {
  __shared__ double partial[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  double s = 0;
  for (int w = 0; w < kThreads / 32; ++w) s += partial[w];
  __syncthreads();
  return s;
}

__global__ void cross_entropy_kernel(float* logits, const int32_t* targets, int64_t vocab, float grad_scale, bool grad,
                                     double* stats) {
  const int64_t row = blockIdx.x;
  float* x = logits + row * vocab;
  const int32_t target = targets[row];
  if (target < 0) {
    if (grad)
      for (int64_t j = threadIdx.x; j < vocab; j += kThreads) x[j] = 0.0f;
    return;
  }
  float best = -FLT_MAX;
  int64_t best_index = vocab;
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads)
    if (x[j] > best) best = x[j], best_index = j;
  block_argmax(best, best_index);
  double sum = 0;
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) sum += exp(static_cast<double>(x[j] - best));
  sum = block_sum_double(sum);
  const double log_sum = log(sum) + static_cast<double>(best);
  const float target_logit = x[target];
  __syncthreads();  // every thread has read x[target] before the gradient overwrites it
  if (threadIdx.x == 0) {
    atomicAdd(stats, log_sum - static_cast<double>(target_logit));
    atomicAdd(stats + 1, 1.0);
    atomicAdd(stats + 2, best_index == target ? 1.0 : 0.0);
  }
  if (grad)
    for (int64_t j = threadIdx.x; j < vocab; j += kThreads)
      x[j] = static_cast<float>(exp(static_cast<double>(x[j]) - log_sum)) * grad_scale -
             (j == target ? grad_scale : 0.0f);
}

}  // namespace

void cross_entropy(float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float grad_scale, bool grad,
                   double* stats, cudaStream_t stream) {
  if (rows == 0) return;
  cross_entropy_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, targets, vocab, grad_scale, grad,
                                                                            stats);
  check_launch("cross_entropy_kernel");
}

}  // namespace podkv::cuda::train
