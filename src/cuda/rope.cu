// RoPE in place: one thread per (row, head, pair). The angle is float32, as
// transformers computes it; cos, sin and the rotation in double.
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

__global__ void rope_kernel(float* x, int64_t rows, int heads, int dim, const int64_t* positions,
                            const float* inv_freq, bool interleaved) {
  const int half = dim / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * heads * half) return;
  const int i = static_cast<int>(idx % half);
  const int64_t rh = idx / half;  // row * heads + head
  const int64_t r = rh / heads;
  const float angle = static_cast<float>(positions[r]) * inv_freq[i];
  double s, c;
  sincos(static_cast<double>(angle), &s, &c);
  float* v = x + rh * dim;
  const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
  const double va = v[a], vb = v[b];
  v[a] = static_cast<float>(va * c - vb * s);
  v[b] = static_cast<float>(vb * c + va * s);
}

}  // namespace

void rope(float* x, int64_t rows, int heads, int dim, const int64_t* positions, const float* inv_freq, bool interleaved,
          cudaStream_t stream) {
  const int64_t n = rows * heads * (dim / 2);
  if (n == 0) return;
  rope_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(x, rows, heads, dim, positions, inv_freq,
                                                                            interleaved);
  check_launch("rope_kernel");
}

}  // namespace podkv::cuda
