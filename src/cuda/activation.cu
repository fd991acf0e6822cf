// Elementwise ops: SwiGLU's silu(gate) * up, the residual add, bias rows, and
// float32 activations to bf16 for the tensor-core GEMM (optionally with the remainder as a second part).
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + 255) / 256); }

__global__ void silu_mul_kernel(float* gate, const float* up, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    gate[i] = silu_mul_value(gate[i], up[i]);
  }
}

// gu [rows, 2 * inter] = [gate | up] per row; out [rows, inter] = silu(gate) * up.
__global__ void silu_mul_rows_kernel(const float* gu, int64_t rows, int64_t inter, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * inter) {
    const int64_t r = i / inter, c = i % inter;
    out[i] = silu_mul_value(gu[r * 2 * inter + c], gu[r * 2 * inter + inter + c]);
  }
}

// The same product from bf16 gate and up (a GEMM's bf16 output), rounded to bf16 for the next GEMM:
// out [rows, inter] = bf16(silu(gate) * up), the product in float32. kVec columns per thread (8-byte
// loads and stores when inter % 4 == 0); rows along the grid's y, so no 64-bit division per element.
template <int kVec>
__global__ void silu_mul_rows_bf16_kernel(const uint16_t* gu, int64_t rows, int64_t inter, uint16_t* out) {
  const int64_t c = kVec * (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
  if (c >= inter) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const uint16_t* g = gu + r * 2 * inter + c;
    uint16_t* o = out + r * inter + c;
    if constexpr (kVec == 4) {
      const ushort4 a = *reinterpret_cast<const ushort4*>(g), b = *reinterpret_cast<const ushort4*>(g + inter);
      ushort4 h;
      h.x = f32_to_bf16_bits(silu_mul_value(bf16_bits_to_f32(a.x), bf16_bits_to_f32(b.x)));
      h.y = f32_to_bf16_bits(silu_mul_value(bf16_bits_to_f32(a.y), bf16_bits_to_f32(b.y)));
      h.z = f32_to_bf16_bits(silu_mul_value(bf16_bits_to_f32(a.z), bf16_bits_to_f32(b.z)));
      h.w = f32_to_bf16_bits(silu_mul_value(bf16_bits_to_f32(a.w), bf16_bits_to_f32(b.w)));
      *reinterpret_cast<ushort4*>(o) = h;
    } else {
      o[0] = f32_to_bf16_bits(silu_mul_value(bf16_bits_to_f32(g[0]), bf16_bits_to_f32(g[inter])));
    }
  }
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t rows, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * n) y[i] += bias[i % n];
}

__global__ void split_bf16_kernel(const float* x, int64_t n, uint16_t* hi, uint16_t* lo) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const uint16_t h = f32_to_bf16_bits(x[i]);
    hi[i] = h;
    if (lo != nullptr) lo[i] = f32_to_bf16_bits(x[i] - bf16_bits_to_f32(h));
  }
}

}  // namespace

void silu_mul(float* gate, const float* up, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  silu_mul_kernel<<<blocks_for(n), 256, 0, stream>>>(gate, up, n);
  check_launch("silu_mul_kernel");
}

void silu_mul_rows(const float* gu, int64_t rows, int64_t inter, float* out, cudaStream_t stream) {
  if (rows * inter == 0) return;
  silu_mul_rows_kernel<<<blocks_for(rows * inter), 256, 0, stream>>>(gu, rows, inter, out);
  check_launch("silu_mul_rows_kernel");
}

void silu_mul_rows_bf16(const uint16_t* gu, int64_t rows, int64_t inter, uint16_t* out, cudaStream_t stream) {
  if (rows * inter == 0) return;
  // gu's and out's rows start 8-byte aligned when inter % 4 == 0 (cudaMalloc'd bases).
  const int vec = inter % 4 == 0 ? 4 : 1;
  const dim3 grid(static_cast<unsigned>((inter / vec + 255) / 256), static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  if (vec == 4) silu_mul_rows_bf16_kernel<4><<<grid, 256, 0, stream>>>(gu, rows, inter, out);
  else silu_mul_rows_bf16_kernel<1><<<grid, 256, 0, stream>>>(gu, rows, inter, out);
  check_launch("silu_mul_rows_bf16_kernel");
}

void add(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<<<blocks_for(n), 256, 0, stream>>>(x, y, n);
  check_launch("add_kernel");
}

void add_bias(float* y, const float* bias, int64_t rows, int64_t n, cudaStream_t stream) {
  if (rows * n == 0) return;
  add_bias_kernel<<<blocks_for(rows * n), 256, 0, stream>>>(y, bias, rows, n);
  check_launch("add_bias_kernel");
}

void split_bf16(const float* x, int64_t n, uint16_t* hi, uint16_t* lo, cudaStream_t stream) {
  if (n == 0) return;
  split_bf16_kernel<<<blocks_for(n), 256, 0, stream>>>(x, n, hi, lo);
  check_launch("split_bf16_kernel");
}

}  // namespace podkv::cuda
