// RMSNorm: one block per row. The row is read once into registers (up to
// kThreads * kPerThread elements; longer rows are read again from memory),
// the sum of squares is taken in double (rows of a few thousand floats would
// otherwise lose a few ulps against the CPU's double reference) with one
// warp-shuffle reduction and one pass over the block's warp sums, and the
// product is float32. A decode step runs 2 L + 1 of these on one row each (65
// for Llama-3-8B), so the latency of the one row is what counts: one round of
// loads, two barriers. Rows of a multiple of 4 elements on 16-byte aligned
// buffers take rms_norm_vec4_kernel: 256 threads, 16-byte loads (a prompt's
// 4,096-row chunk of the Llama-3-8B shape ran the scalar kernel at 1.5 TB/s
// on an H100 whose copy rate is 3.0, session 40).
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
  const float inv = inverse_rms<kThreads>(ss, n, eps);
  Out* o = out + r * n;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (i < n) store(o + i, v[k] * inv * weight[i]);
  }
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kPerThread) * kThreads; i < n; i += kThreads)
    store(o + i, xr[i] * inv * weight[i]);
}

// The same norm four elements at a time (n % 4 == 0; x, residual, weight and out 16-byte aligned, out
// 8-byte for bf16): thread t of T holds elements 4 (t + T k) .. + 3 for k < kVecPerThread, T = 256
// threads for rows up to 4096 elements, 512 up to 8192 (those in registers; longer rows are read
// again). At 58 registers 4 rows of 256 threads are in flight per multiprocessor (the scalar kernel,
// 56 registers at 512 threads, had 2); capping them at 40 spilled. Its squares are summed in another order than
// rms_norm_kernel's (four a thread before the shuffles), in double all the same; every row of a
// multiple of 4 takes this kernel, float32 and bf16 out alike, so stage_rms_norm and rms_norm still
// round the same norm.
constexpr int kVecPerThread = 4;

__device__ __forceinline__ void store4(float* o, float4 v) { *reinterpret_cast<float4*>(o) = v; }
__device__ __forceinline__ void store4(uint16_t* o, float4 v) {
  const uint32_t lo = f32_to_bf16_bits(v.x) | (static_cast<uint32_t>(f32_to_bf16_bits(v.y)) << 16);
  const uint32_t hi = f32_to_bf16_bits(v.z) | (static_cast<uint32_t>(f32_to_bf16_bits(v.w)) << 16);
  *reinterpret_cast<uint2*>(o) = make_uint2(lo, hi);
}

__device__ __forceinline__ double squares(float4 v) {
  double ss = static_cast<double>(v.x) * v.x;
  ss += static_cast<double>(v.y) * v.y;
  ss += static_cast<double>(v.z) * v.z;
  ss += static_cast<double>(v.w) * v.w;
  return ss;
}

// Element i of x (+ residual, written back): four at a time.
__device__ __forceinline__ float4 load_sum(float4* xr, const float4* res, int64_t i) {
  float4 v = xr[i];
  if (res != nullptr) {
    const float4 a = res[i];
    v.x += a.x, v.y += a.y, v.z += a.z, v.w += a.w;
    xr[i] = v;
  }
  return v;
}

__device__ __forceinline__ float4 scaled(float4 v, float inv, float4 w) {
  return make_float4(v.x * inv * w.x, v.y * inv * w.y, v.z * inv * w.z, v.w * inv * w.w);
}

template <int kVecThreads, typename Out>
__global__ void __launch_bounds__(kVecThreads)
    rms_norm_vec4_kernel(float* x, const float* residual, const float* weight, int64_t n, double eps, Out* out) {
  const int64_t r = blockIdx.x, n4 = n / 4;
  float4* xr = reinterpret_cast<float4*>(x + r * n);
  const float4* res = residual != nullptr ? reinterpret_cast<const float4*>(residual + r * n) : nullptr;
  const float4* w4 = reinterpret_cast<const float4*>(weight);
  float4 v[kVecPerThread];
  double ss = 0.0;
#pragma unroll
  for (int k = 0; k < kVecPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * kVecThreads;
    v[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (i < n4) v[k] = load_sum(xr, res, i), ss += squares(v[k]);
  }
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kVecPerThread) * kVecThreads; i < n4; i += kVecThreads)
    ss += squares(load_sum(xr, res, i));
  const float inv = inverse_rms<kVecThreads>(ss, n, eps);
  Out* o = out + r * n;
#pragma unroll
  for (int k = 0; k < kVecPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * kVecThreads;
    if (i < n4) store4(o + 4 * i, scaled(v[k], inv, w4[i]));
  }
  for (int64_t i = threadIdx.x + static_cast<int64_t>(kVecPerThread) * kVecThreads; i < n4; i += kVecThreads)
    store4(o + 4 * i, scaled(xr[i], inv, w4[i]));
}

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The one launch behind the three entry points: `residual` null for a plain norm.
template <typename Out>
void launch_rms_norm(float* x, const float* residual, const float* weight, int64_t rows, int64_t n, double eps,
                     Out* out, cudaStream_t stream) {
  if (rows == 0) return;
  const bool vec4 = n % 4 == 0 && aligned(x, 16) && aligned(residual, 16) && aligned(weight, 16) &&
                    aligned(out, sizeof(Out) == 2 ? 8 : 16);
  if (vec4) {
    const unsigned grid = static_cast<unsigned>(rows);
    if (n <= 4 * kVecPerThread * 256) rms_norm_vec4_kernel<256><<<grid, 256, 0, stream>>>(x, residual, weight, n, eps, out);
    else rms_norm_vec4_kernel<512><<<grid, 512, 0, stream>>>(x, residual, weight, n, eps, out);
    check_launch("rms_norm_vec4_kernel");
    return;
  }
  rms_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, residual, weight, n, eps, out);
  check_launch("rms_norm_kernel");
}

// Qwen3's per-head norm: one warp per head vector of one row, in place. Heads [0, heads) are q's (at
// column h * dim, weights q_weight), the next kv_heads k's (after q's heads * dim columns, k_weight);
// `stride` is the row's width (q | k | v). head_dim is at most 128 on the device: 4 elements a lane.
constexpr int kHeadNormWarps = 4;

__global__ void __launch_bounds__(32 * kHeadNormWarps)
    head_rms_norm_kernel(float* qkv, int64_t rows, int64_t stride, int heads, int kv_heads, int dim,
                         const float* q_weight, const float* k_weight, double eps) {
  const int64_t vec = static_cast<int64_t>(blockIdx.x) * kHeadNormWarps + threadIdx.x / 32;
  const int all = heads + kv_heads, lane = threadIdx.x % 32;
  if (vec >= rows * all) return;
  const int64_t r = vec / all;
  const int h = static_cast<int>(vec % all);
  const bool is_q = h < heads;
  float* x = qkv + r * stride + static_cast<int64_t>(h) * dim;  // k's heads follow q's directly
  rms_norm_head(x, x, is_q ? q_weight : k_weight, dim, eps, lane);
}

}  // namespace

void head_rms_norm(float* qkv, int64_t rows, int64_t stride, int heads, int kv_heads, int dim, const float* q_weight,
                   const float* k_weight, double eps, cudaStream_t stream) {
  const int64_t vecs = rows * (heads + kv_heads);
  if (vecs == 0) return;
  check(dim <= 128, "cuda head_rms_norm: head_dim " + std::to_string(dim) + " is above 128");
  const auto grid = static_cast<unsigned>((vecs + kHeadNormWarps - 1) / kHeadNormWarps);
  head_rms_norm_kernel<<<grid, 32 * kHeadNormWarps, 0, stream>>>(qkv, rows, stride, heads, kv_heads, dim, q_weight,
                                                                 k_weight, eps);
  check_launch("head_rms_norm_kernel");
}

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
