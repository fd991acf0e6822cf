// The per-token training ops on the GPU: embedding, RMSNorm, RoPE, SwiGLU and
// the residual add, forward and backward (src/train/ops.cpp is the oracle).
#include <cuda_bf16.h>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/train_kernels.h"

namespace podkv::cuda::train {

namespace {

constexpr int kThreads = 256;
// Rows per block of the column sums' first pass.
constexpr int64_t kColumnRows = 256;

unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

__global__ void embedding_forward_kernel(const float* table, const int32_t* tokens, int64_t n, int64_t dim,
                                         float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * dim) return;
  const int64_t row = i / dim;
  out[i] = table[static_cast<int64_t>(tokens[row]) * dim + i % dim];
}

__global__ void embedding_backward_kernel(const float* dout, const int32_t* tokens, int64_t n, int64_t dim,
                                          float* dtable) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * dim) return;
  const int64_t row = i / dim;
  atomicAdd(dtable + static_cast<int64_t>(tokens[row]) * dim + i % dim, dout[i]);
}

// One block per row.
// RMSNorm: one warp per row (kThreads / 32 rows per block), lanes stride the row.
__device__ __forceinline__ uint16_t bf16_bits(float v) {
  const __nv_bfloat16 b = __float2bfloat16_rn(v);
  return *reinterpret_cast<const uint16_t*>(&b);
}

__global__ void rmsnorm_forward_kernel(const float* x, const float* w, int64_t n, int64_t dim, float eps, float* y,
                                       uint16_t* y16, float* r) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;
  const float* xr = x + row * dim;
  float s = 0;
  for (int64_t j = lane; j < dim; j += 32) s += xr[j] * xr[j];
  const float ri = rsqrtf(warp_sum(s) / static_cast<float>(dim) + eps);
  if (lane == 0) r[row] = ri;
  for (int64_t j = lane; j < dim; j += 32) {
    const float v = xr[j] * ri * w[j];
    if (y != nullptr) y[row * dim + j] = v;
    if (y16 != nullptr) y16[row * dim + j] = bf16_bits(v);
  }
}

__global__ void rmsnorm_backward_kernel(const float* dy, const float* x, const float* w, const float* r, int64_t n,
                                       int64_t dim, float* dx) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;
  const float* xr = x + row * dim;
  const float* gr = dy + row * dim;
  float dot = 0;
  for (int64_t j = lane; j < dim; j += 32) dot += gr[j] * w[j] * xr[j];
  const float ri = r[row];
  const float c = warp_sum(dot) / static_cast<float>(dim) * ri * ri * ri;
  for (int64_t j = lane; j < dim; j += 32) dx[row * dim + j] += ri * gr[j] * w[j] - c * xr[j];
}

// First pass of the column sums: block (column tile of kThreads, row chunk)
// writes Σ over its kColumnRows rows of value(i, j) into partial[chunk, j].
// With x and r: value = a·x·r (RMSNorm weights), else value = a.
__global__ void column_partial_kernel(const float* a, const float* x, const float* r, int64_t n, int64_t dim,
                                      float* partial) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= dim) return;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * kColumnRows;
  const int64_t end = min(n, begin + kColumnRows);
  float s = 0;
  for (int64_t i = begin; i < end; ++i) s += x != nullptr ? a[i * dim + j] * x[i * dim + j] * r[i] : a[i * dim + j];
  partial[static_cast<int64_t>(blockIdx.y) * dim + j] = s;
}

__global__ void column_finish_kernel(const float* partial, int64_t chunks, int64_t dim, float* out) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= dim) return;
  float s = 0;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * dim + j];
  out[j] += s;
}

void column_pass(const float* a, const float* x, const float* r, int64_t n, int64_t dim, float* out, float* scratch,
                 cudaStream_t stream) {
  if (n == 0 || dim == 0) return;
  const int64_t chunks = (n + kColumnRows - 1) / kColumnRows;
  column_partial_kernel<<<dim3(blocks(dim), static_cast<unsigned>(chunks)), kThreads, 0, stream>>>(a, x, r, n, dim,
                                                                                                 scratch);
  check_launch("column_partial_kernel");
  column_finish_kernel<<<blocks(dim), kThreads, 0, stream>>>(scratch, chunks, dim, out);
  check_launch("column_finish_kernel");
}

// One thread per (token, head, pair).
__global__ void rope_kernel(float* x, int64_t n, int64_t seq, int heads, int dim, const float* cos_table,
                            const float* sin_table, bool interleaved, float sign) {
  const int half = dim / 2;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * heads * half) return;
  const int p = static_cast<int>(i % half);
  const int64_t token = i / half / heads;
  float* v = x + (i / half) * dim;
  const float c = cos_table[(token % seq) * half + p], s = sign * sin_table[(token % seq) * half + p];
  const int a = interleaved ? 2 * p : p;
  const int b = interleaved ? 2 * p + 1 : p + half;
  const float x0 = v[a], x1 = v[b];
  v[a] = x0 * c - x1 * s;
  v[b] = x1 * c + x0 * s;
}

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

__global__ void swiglu_forward_kernel(const float* gate, const float* up, int64_t n, float* h, uint16_t* h16) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = gate[i] * sigmoid(gate[i]) * up[i];
  if (h != nullptr) h[i] = v;
  if (h16 != nullptr) h16[i] = bf16_bits(v);
}

__global__ void swiglu_backward_kernel(const float* dh, const float* gate, const float* up, int64_t n, float* dgate,
                                       float* dup, bool accumulate, uint16_t* dgate16, uint16_t* dup16) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i], sg = sigmoid(g);
  // silu'(g) = σ(g) · (1 + g · (1 − σ(g)))
  const float d_gate = dh[i] * up[i] * sg * (1.0f + g * (1.0f - sg)), d_up = dh[i] * g * sg;
  if (dgate != nullptr) dgate[i] = accumulate ? dgate[i] + d_gate : d_gate;
  if (dup != nullptr) dup[i] = accumulate ? dup[i] + d_up : d_up;
  if (dgate16 != nullptr) dgate16[i] = bf16_bits(d_gate);
  if (dup16 != nullptr) dup16[i] = bf16_bits(d_up);
}

// 8 values per thread where n is a multiple of 8 (16-byte stores), else one.
__global__ void to_bf16_kernel(const float* x, int64_t n, uint16_t* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n % 8 != 0) {
    if (i < n) out[i] = bf16_bits(x[i]);
    return;
  }
  if (i >= n / 8) return;
  const float4 lo = reinterpret_cast<const float4*>(x)[2 * i], hi = reinterpret_cast<const float4*>(x)[2 * i + 1];
  auto pack = [](float a, float b) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&v);
  };
  reinterpret_cast<uint4*>(out)[i] = make_uint4(pack(lo.x, lo.y), pack(lo.z, lo.w), pack(hi.x, hi.y), pack(hi.z, hi.w));
}

__global__ void add_kernel(const float* a, const float* b, int64_t n, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = a[i] + b[i];
}

}  // namespace

void embedding_forward(const float* table, const int32_t* tokens, int64_t n, int64_t dim, float* out,
                       cudaStream_t stream) {
  if (n * dim == 0) return;
  embedding_forward_kernel<<<blocks(n * dim), kThreads, 0, stream>>>(table, tokens, n, dim, out);
  check_launch("embedding_forward_kernel");
}

void embedding_backward(const float* dout, const int32_t* tokens, int64_t n, int64_t dim, float* dtable,
                        cudaStream_t stream) {
  if (n * dim == 0) return;
  embedding_backward_kernel<<<blocks(n * dim), kThreads, 0, stream>>>(dout, tokens, n, dim, dtable);
  check_launch("embedding_backward_kernel");
}

void rmsnorm_forward(const float* x, const float* w, int64_t n, int64_t dim, double eps, float* y, float* r,
                     cudaStream_t stream, uint16_t* y16) {
  if (n == 0) return;
  rmsnorm_forward_kernel<<<blocks(n * 32), kThreads, 0, stream>>>(x, w, n, dim, static_cast<float>(eps), y, y16, r);
  check_launch("rmsnorm_forward_kernel");
}

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* r, int64_t n, int64_t dim,
                      float* dx, float* dweight, float* scratch, cudaStream_t stream) {
  if (n == 0) return;
  if (dx != nullptr) {
    rmsnorm_backward_kernel<<<blocks(n * 32), kThreads, 0, stream>>>(dy, x, w, r, n, dim, dx);
    check_launch("rmsnorm_backward_kernel");
  }
  if (dweight != nullptr) column_pass(dy, x, r, n, dim, dweight, scratch, stream);
}

size_t column_scratch_floats(int64_t n, int64_t dim) {
  return static_cast<size_t>((n + kColumnRows - 1) / kColumnRows) * static_cast<size_t>(dim);
}

void column_sums(const float* a, int64_t n, int64_t dim, float* out, float* scratch, cudaStream_t stream) {
  column_pass(a, nullptr, nullptr, n, dim, out, scratch, stream);
}

void rope(float* x, int64_t n, int64_t seq, int heads, int dim, const float* cos_table, const float* sin_table,
          bool interleaved, float sign, cudaStream_t stream) {
  const int64_t pairs = n * heads * (dim / 2);
  if (pairs == 0) return;
  rope_kernel<<<blocks(pairs), kThreads, 0, stream>>>(x, n, seq, heads, dim, cos_table, sin_table, interleaved, sign);
  check_launch("rope_kernel");
}

void swiglu_forward(const float* gate, const float* up, int64_t n, float* h, cudaStream_t stream, uint16_t* h16) {
  if (n == 0) return;
  swiglu_forward_kernel<<<blocks(n), kThreads, 0, stream>>>(gate, up, n, h, h16);
  check_launch("swiglu_forward_kernel");
}

void swiglu_backward(const float* dh, const float* gate, const float* up, int64_t n, float* dgate, float* dup,
                     cudaStream_t stream, bool accumulate, uint16_t* dgate16, uint16_t* dup16) {
  if (n == 0) return;
  swiglu_backward_kernel<<<blocks(n), kThreads, 0, stream>>>(dh, gate, up, n, dgate, dup, accumulate, dgate16, dup16);
  check_launch("swiglu_backward_kernel");
}

void to_bf16(const float* x, int64_t n, uint16_t* out, cudaStream_t stream) {
  if (n == 0) return;
  to_bf16_kernel<<<blocks(n % 8 == 0 ? n / 8 : n), kThreads, 0, stream>>>(x, n, out);
  check_launch("to_bf16_kernel");
}

void add(const float* a, const float* b, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<<<blocks(n), kThreads, 0, stream>>>(a, b, n, out);
  check_launch("add_kernel");
}

}  // namespace podkv::cuda::train
