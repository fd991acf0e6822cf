// Random bf16 weights filled on the device (podkv bench --random-weights): an
// 8B-shaped model benchmarked from a config.json alone, without 16 GB on disk
// or in host memory. Each element is a hash of (seed, index): the same seed
// gives the same weights whatever the launch shape.
#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void fill_random_kernel(uint16_t* dst, int64_t n, uint64_t seed, float bound) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t r = splitmix64(seed * 0x2545f4914f6cdd1dull + static_cast<uint64_t>(i));
    const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    dst[i] = f32_to_bf16_bits((2.0f * u - 1.0f) * bound);
  }
}

}  // namespace

void fill_random_bf16(uint16_t* dst, int64_t n, uint64_t seed, float bound, cudaStream_t stream) {
  if (n <= 0) return;
  fill_random_kernel<<<132 * 8, 256, 0, stream>>>(dst, n, seed, bound);
  check_launch("fill_random_kernel");
}

}  // namespace podkv::cuda
