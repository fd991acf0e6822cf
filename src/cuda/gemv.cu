// y[rows, out] = x[rows, in] · Wᵀ (+ bias) for a few rows (decode): one warp
// per output feature reads its row of W once, in the stored type, and keeps
// one float32 sum per row of x. BF16 rows whose length is a multiple of 8 are
// read 16 bytes per lane (the weights CudaBackend uploads); other types and
// shapes element by element. Memory-bound: its speed is bytes(W) / time.
#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kRows = static_cast<int>(kGemvMaxRows);

__device__ __forceinline__ void finish(float (&acc)[kRows], int lane, int rows, int64_t o, int64_t out, float* y,
                                       const float* bias) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows) break;
    const float s = warp_sum(acc[r]);
    if (lane == 0) y[r * out + o] = s + (bias != nullptr ? bias[o] : 0.0f);
  }
}

__global__ void gemv_bf16x8_kernel(const uint16_t* w, int64_t out, int64_t in, const float* x, int rows, float* y,
                                   const float* bias) {
  const int lane = threadIdx.x % 32;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (o >= out) return;
  const uint4* row = reinterpret_cast<const uint4*>(w + o * in);
  float acc[kRows] = {};
  const int64_t n8 = in / 8;
#pragma unroll 4
  for (int64_t k = lane; k < n8; k += 32) {
    const uint4 p = __ldg(row + k);
    const uint32_t words[4] = {p.x, p.y, p.z, p.w};
    float wf[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      wf[2 * i] = __uint_as_float(words[i] << 16);
      wf[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows) break;
      const float4* xr = reinterpret_cast<const float4*>(x + r * in) + 2 * k;
      const float4 a = __ldg(xr), b = __ldg(xr + 1);
      acc[r] += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w + wf[4] * b.x + wf[5] * b.y + wf[6] * b.z +
                wf[7] * b.w;
    }
  }
  finish(acc, lane, rows, o, out, y, bias);
}

__global__ void gemv_any_kernel(DType dtype, const uint8_t* w, size_t row_bytes, int64_t out, int64_t in,
                                const float* x, int rows, float* y, const float* bias) {
  const int lane = threadIdx.x % 32;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (o >= out) return;
  const uint8_t* row = w + o * row_bytes;
  float acc[kRows] = {};
  for (int64_t k = lane; k < in; k += 32) {
    const float wk = weight_element(dtype, row, k);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows) break;
      acc[r] += wk * x[r * in + k];
    }
  }
  finish(acc, lane, rows, o, out, y, bias);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void gemv(DType dtype, const void* w, int64_t out, int64_t in, const float* x, int64_t rows, float* y,
          const float* bias, cudaStream_t stream) {
  check(rows <= kGemvMaxRows, "cuda gemv: " + std::to_string(rows) + " rows (at most 8)");
  check(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::Q8_0,
        std::string("cuda matmul: weights of type ") + dtype_name(dtype) + " are not supported on the device");
  if (rows == 0 || out == 0) return;
  const unsigned blocks = static_cast<unsigned>((out + kWarps - 1) / kWarps);
  if (dtype == DType::BF16 && in % 8 == 0 && aligned16(w) && aligned16(x)) {
    gemv_bf16x8_kernel<<<blocks, kWarps * 32, 0, stream>>>(static_cast<const uint16_t*>(w), out, in, x,
                                                           static_cast<int>(rows), y, bias);
    check_launch("gemv_bf16x8_kernel");
  } else {
    gemv_any_kernel<<<blocks, kWarps * 32, 0, stream>>>(dtype, static_cast<const uint8_t*>(w),
                                                        dtype_bytes(dtype, static_cast<size_t>(in)), out, in, x,
                                                        static_cast<int>(rows), y, bias);
    check_launch("gemv_any_kernel");
  }
}

}  // namespace podkv::cuda
