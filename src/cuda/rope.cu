// RoPE: one thread per (row, head, pair); the rotation is rope.cuh's.
//  - rope: in place on one tensor;
//  - split_qkv_rope: the stacked projection's output [rows, q | k | v] split into
//    q, k, v with q and k rotated on the way, in one launch instead of three
//    (split, rope q, rope k: launches the decode step's graph pays per layer).
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/rope.cuh"

namespace podkv::cuda {

namespace {

__global__ void rope_kernel(float* x, int64_t rows, int heads, int dim, const int64_t* positions,
                            const float* inv_freq, bool interleaved) {
  const int half = dim / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * heads * half) return;
  const int i = static_cast<int>(idx % half);
  const int64_t rh = idx / half;  // row * heads + head
  float* v = x + rh * dim;
  rotate_pair(v, v, i, dim, positions[rh / heads], inv_freq, interleaved);
}

// One thread per (row, unit): units [0, Hq * half) are q's pairs, then Hkv * half of k's pairs,
// then Hkv * dim of v's elements (copied).
__global__ void split_qkv_rope_kernel(const float* qkv, int64_t rows, int heads, int kv_heads, int dim,
                                      const int64_t* positions, const float* inv_freq, bool interleaved, float* q,
                                      float* k, float* v) {
  const int half = dim / 2;
  const int64_t q_units = static_cast<int64_t>(heads) * half, k_units = static_cast<int64_t>(kv_heads) * half;
  const int64_t units = q_units + k_units + static_cast<int64_t>(kv_heads) * dim;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * units) return;
  const int64_t r = idx / units, u = idx % units;
  const int64_t nq = static_cast<int64_t>(heads) * dim, nkv = static_cast<int64_t>(kv_heads) * dim;
  const float* row = qkv + r * (nq + 2 * nkv);
  if (u < q_units) {
    const int64_t head = u / half;
    rotate_pair(row + head * dim, q + r * nq + head * dim, static_cast<int>(u % half), dim, positions[r], inv_freq,
                interleaved);
  } else if (u < q_units + k_units) {
    const int64_t head = (u - q_units) / half;
    rotate_pair(row + nq + head * dim, k + r * nkv + head * dim, static_cast<int>((u - q_units) % half), dim,
                positions[r], inv_freq, interleaved);
  } else {
    const int64_t e = u - q_units - k_units;
    v[r * nkv + e] = row[nq + nkv + e];
  }
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

void split_qkv_rope(const float* qkv, int64_t rows, int heads, int kv_heads, int dim, const int64_t* positions,
                    const float* inv_freq, bool interleaved, float* q, float* k, float* v, cudaStream_t stream) {
  const int64_t n = rows * (static_cast<int64_t>(heads + kv_heads) * (dim / 2) + static_cast<int64_t>(kv_heads) * dim);
  if (n == 0) return;
  split_qkv_rope_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(
      qkv, rows, heads, kv_heads, dim, positions, inv_freq, interleaved, q, k, v);
  check_launch("split_qkv_rope_kernel");
}

}  // namespace podkv::cuda
