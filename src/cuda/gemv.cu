// y[rows, out] = x[rows, in] · Wᵀ (+ bias) for a few rows (decode), reading W
// once. Memory-bound: its speed is bytes(W) / time.
//  - One row: BF16 rows whose length is a multiple of 8 (the weights
//    CudaBackend uploads): each warp takes two output features, reading x once
//    for both, 16 bytes of W per lane and load, four loads per row in flight
//    (gemv_bf16_row_kernel; for SwiGLU's stacked gate | up projection the
//    warp's two features are gate j and up j, and it writes silu(gate) * up:
//    gemv_swiglu_row; for a projection into the residual stream the sums are
//    added to it and the last block to finish takes the next RMSNorm:
//    gemv_residual_norm_row). Other types and shapes: one warp per output
//    feature, its row of W in the stored type, a float32 sum.
//  - 2..8 rows of BF16 weights (in % 32 == 0): the tensor cores (mma.sync
//    m16n8k16), W as A (16 output features), x as B (its rows are the mma's 8
//    columns) split into bf16 hi + lo, so x keeps about 2^-17 relative and
//    the result matches the float32 kernels'. Each warp takes 32 features and
//    one slice of the inputs (split-K), four 32-input chunks per lane in flight;
//    the slices' sums are added in a fixed order by a second kernel
//    (deterministic).
#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/gemv_row.cuh"
#include "cuda/kernels.h"
#include "cuda/warp_attention.cuh"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows) break;
      const float4* xr = reinterpret_cast<const float4*>(x + r * in) + 2 * k;
      acc[r] += dot8(p, __ldg(xr), __ldg(xr + 1));
    }
  }
  finish(acc, lane, rows, o, out, y, bias);
}

// What gemv_bf16_row_kernel does with its sums (kernels.h: gemv, gemv_swiglu_row, gemv_residual_norm_row).
enum class Epilogue { kPlain, kSwiglu, kResidualNorm };

// kResidualNorm: y is the residual stream, y[o] += the sum; then, with `out` set, the last block to
// finish writes out = RMSNorm(y) * weight (rms_norm_kernel's arithmetic: squares summed in double,
// the product float32). `counter` is zero before the launch and again after it.
struct NormAfter {
  const float* weight = nullptr;
  double eps = 0;
  float* out = nullptr;
  unsigned* counter = nullptr;
};

// The last block of the grid to get here (every block's writes of y made visible first) normalises
// y [n]; the others return. L2 loads (__ldcg): y was written by other SMs during this launch.
__device__ __forceinline__ void last_block_rms_norm(const float* y, int64_t n, const NormAfter& norm) {
  __shared__ bool last;
  __shared__ double sums[kWarps];
  __shared__ float inv_shared;
  __threadfence();  // this thread's writes of y, before the block's ticket
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(norm.counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = __ldcg(y + i);
    ss += static_cast<double>(v) * v;
  }
  ss = warp_sum_double(ss);
  if (lane == 0) sums[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    double t = lane < kWarps ? sums[lane] : 0.0;
    t = warp_sum_double(t);
    if (lane == 0) inv_shared = static_cast<float>(1.0 / sqrt(t / static_cast<double>(n) + norm.eps));
  }
  __syncthreads();
  const float inv = inv_shared;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) norm.out[i] = __ldcg(y + i) * inv * norm.weight[i];
  if (threadIdx.x == 0) *norm.counter = 0;
}

// One row of x, BF16 W (in % 8 == 0): each warp takes R output features and reads
// x once for all of them (x is float32: twice W's bytes per element, so one x
// load per feature is as much L1 traffic as the weights); each lane loads U
// 16-byte chunks of every row before it multiplies, so that U * R loads are in
// flight. Where the outputs give too few warps to keep the memory busy (Llama-3-8B's
// o and down projections: 2048 warps, 15 per SM, 2.5-3.0 TB/s in Nsight Compute), S warps
// of a block share the R features, each summing one slice of the inputs (chunks
// [slice * span, slice * span + span), span a multiple of 32 chunks), and the block adds
// the S sums in slice order (deterministic; the result depends on S and `in` alone, so
// the fused and unfused launches of one shape agree exactly). Per lane and slice the
// chunks k, k + 32, ... are summed in order; with S = 1 that is gemv_bf16x8_kernel's
// order, the same float32 result.
//  - kSwiglu (R = 2): W is SwiGLU's stacked [gate | up] projection, out = 2 * inter rows; warp j takes
//    rows j and inter + j and writes y[j] = silu(gate_j) * up_j, the product silu_mul_rows forms from
//    the same two sums: the launch that would follow is folded into this one.
//  - kResidualNorm: y[o] = y[o] + sum (add_rms_norm's float32 add), then NormAfter.
template <int R, int U, Epilogue E = Epilogue::kPlain>
__global__ void gemv_bf16_row_kernel(const uint16_t* w, int64_t out, int64_t in, const float* x, float* y,
                                     const float* bias, NormAfter norm, int slices) {
  constexpr bool kSwiglu = E == Epilogue::kSwiglu;
  static_assert(!kSwiglu || R == 2, "the SwiGLU epilogue pairs two rows");
  __shared__ float partial[kWarps][R];  // slices > 1: each warp's R sums
  const int lane = threadIdx.x % 32, warp_in_block = threadIdx.x / 32;
  const int slice = warp_in_block % slices;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * (kWarps / slices) + warp_in_block / slices;
  const int64_t half = out / 2;
  const int64_t o0 = kSwiglu ? warp : warp * R;
  const bool active = o0 < (kSwiglu ? half : out);
  // Warps past the end return, except where the block still meets at a barrier (the slices' sums,
  // last_block_rms_norm's).
  if (E != Epilogue::kResidualNorm && slices == 1 && !active) return;
  float acc[R] = {};
  if (active) {
    const uint4* row[R];
#pragma unroll
    for (int j = 0; j < R; ++j) {
      const int64_t o = kSwiglu ? o0 + j * half : (o0 + j < out ? o0 + j : o0);
      row[j] = reinterpret_cast<const uint4*>(w + o * in);
    }
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const int64_t n8 = in / 8;
    const int64_t span = slices == 1 ? n8 : (n8 + 32 * slices - 1) / (32 * slices) * 32;
    const int64_t k_end = min(n8, span * (slice + 1));
    // Whole groups of U chunks with unconditional loads (all issued before the first product), then
    // the rest one chunk at a time.
    int64_t k0 = span * slice + lane;
    for (; k0 + 32 * (U - 1) < k_end; k0 += 32 * U) {
      uint4 wv[R][U];
      float4 xa[U], xb[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
#pragma unroll
        for (int j = 0; j < R; ++j) wv[j][u] = load_nc(row[j] + k0 + 32 * u);
        xa[u] = load_nc(x4 + 2 * (k0 + 32 * u));
        xb[u] = load_nc(x4 + 2 * (k0 + 32 * u) + 1);
      }
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int j = 0; j < R; ++j) acc[j] += dot8(wv[j][u], xa[u], xb[u]);
    }
    for (; k0 < k_end; k0 += 32) {
      const float4 a = __ldg(x4 + 2 * k0), b = __ldg(x4 + 2 * k0 + 1);
#pragma unroll
      for (int j = 0; j < R; ++j) acc[j] += dot8(__ldg(row[j] + k0), a, b);
    }
#pragma unroll
    for (int j = 0; j < R; ++j) acc[j] = warp_sum(acc[j]);
  }
  if (slices > 1) {
    if (lane == 0)
#pragma unroll
      for (int j = 0; j < R; ++j) partial[warp_in_block][j] = acc[j];
    __syncthreads();
    const int first = warp_in_block - slice;
#pragma unroll
    for (int j = 0; j < R; ++j) {
      float t = partial[first][j];
      for (int i = 1; i < slices; ++i) t += partial[first + i][j];
      acc[j] = t;
    }
  }
  if (active && slice == 0 && lane == 0) {
    if constexpr (kSwiglu) {
      y[o0] = silu_mul_value(acc[0], acc[R - 1]);
    } else {
#pragma unroll
      for (int j = 0; j < R; ++j) {
        if (o0 + j >= out) continue;
        if constexpr (E == Epilogue::kResidualNorm) y[o0 + j] = y[o0 + j] + acc[j];
        else y[o0 + j] = acc[j] + (bias != nullptr ? bias[o0 + j] : 0.0f);
      }
    }
  }
  if constexpr (E == Epilogue::kResidualNorm) {
    if (norm.out != nullptr) last_block_rms_norm(y, out, norm);
  }
}

// The (R, U) of gemv_bf16_row_kernel for one-row products: (2, 4), the fastest of the nine
// measured on the H200 (docs/gpu-bench/decode-tuning: 157 tok/s against 143 for
// gemv_bf16x8_kernel, Llama-3-8B decode at batch 1); PODKV_CUDA_GEMV_ROW="R,U" (R in {1, 2, 4},
// U in {2, 4, 8}) picks another, "0" gemv_bf16x8_kernel: a knob for tuning on other GPUs
// (scripts/tuning_gpu.sh); any other value keeps the default. Read once.
struct RowVariant {
  int r = 2, u = 4;
};
RowVariant row_variant() {
  static const RowVariant v = [] {
    RowVariant out;
    const char* s = std::getenv("PODKV_CUDA_GEMV_ROW");
    if (s == nullptr) return out;
    int r = 0, u = 0;
    if (std::strcmp(s, "0") == 0)
      out.r = 0;  // gemv_bf16x8_kernel
    else if (std::sscanf(s, "%d,%d", &r, &u) == 2 && (r == 1 || r == 2 || r == 4) && (u == 2 || u == 4 || u == 8))
      out.r = r, out.u = u;
    return out;
  }();
  return v;
}

// The slices per output warp of gemv_bf16_row_kernel: the largest power of two up to kWarps that
// keeps the warps within one wave (`resident` warps on the whole GPU), each lane's slice at least U
// chunks long. PODKV_CUDA_GEMV_SLICES=N (1, 2, 4 or 8) sets it wherever the inputs allow (1: the
// kernel without slices), for tuning; read once.
int row_slices(int64_t output_warps, int64_t in, int u, int64_t resident) {
  static const int forced = [] {
    const char* s = std::getenv("PODKV_CUDA_GEMV_SLICES");
    const int v = s != nullptr ? std::atoi(s) : 0;
    return v == 1 || v == 2 || v == 4 || v == 8 ? v : 0;
  }();
  const int64_t n8 = in / 8;
  int slices = 1;
  while (slices < kWarps && n8 / (2 * slices) >= 32 * u &&
         (forced != 0 ? 2 * slices <= forced : output_warps * 2 * slices <= resident))
    slices *= 2;
  return slices;
}

template <int R, int U, Epilogue E>
void launch_row_kernel_u(const uint16_t* w, int64_t out, int64_t in, const float* x, float* y, const float* bias,
                         int num_sms, cudaStream_t stream, NormAfter norm) {
  auto* kernel = gemv_bf16_row_kernel<R, U, E>;
  // Blocks of this kernel resident on one multiprocessor (its registers decide), asked once. A failed
  // query (never seen) leaves the inputs unsplit and clears the error, so that no later check reports it.
  static const int blocks_per_sm = [kernel] {
    int blocks = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kWarps * 32, 0) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return blocks;
  }();
  const int64_t resident = static_cast<int64_t>(num_sms) * blocks_per_sm * kWarps;
  const int64_t warps = E == Epilogue::kSwiglu ? out / 2 : (out + R - 1) / R;
  const int slices = row_slices(warps, in, U, resident);
  const int64_t per_block = kWarps / slices;
  const unsigned blocks = static_cast<unsigned>((warps + per_block - 1) / per_block);
  kernel<<<blocks, kWarps * 32, 0, stream>>>(w, out, in, x, y, bias, norm, slices);
  check_launch("gemv_bf16_row_kernel");
}

template <int R, Epilogue E = Epilogue::kPlain>
void launch_row_kernel(int u, const uint16_t* w, int64_t out, int64_t in, const float* x, float* y, const float* bias,
                       int num_sms, cudaStream_t stream, NormAfter norm = {}) {
  switch (u) {
    case 2: launch_row_kernel_u<R, 2, E>(w, out, in, x, y, bias, num_sms, stream, norm); break;
    case 4: launch_row_kernel_u<R, 4, E>(w, out, in, x, y, bias, num_sms, stream, norm); break;
    default: launch_row_kernel_u<R, 8, E>(w, out, in, x, y, bias, num_sms, stream, norm); break;
  }
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

// Partial sums of split blockIdx.y: partial[split][rows][out]. Lane (g, c) reads 16 bytes of W
// rows o0 + g, o0 + g + 8 (and the next 16 features) and of x row g, elements k + 8c .. k + 8c + 7
// of each 32-wide chunk: the mma's k order is permuted the same way for A and B
// (warp_attention.cuh), which a dot product allows.
constexpr int kMmaWarps = 4;
constexpr int kMmaTiles = 2;  // m16 tiles per warp

// U chunks of 32 inputs are loaded per lane before the first of their products (U x 64 bytes of W
// per lane in flight, as the decode chain's groups; mma_kernel). The kernel before session 51 loaded
// one chunk at a time (about 2 KB a warp in flight) and ran at 61% of the copy rate at batch 8 on an
// H100. A chunk past the slice's end loads nothing and adds nothing; a lane's sums are in chunk order
// whatever U is, so U changes no output bit (the split count does: gemv_splits).
// kMinBlocks (0: none) asks the compiler for at least that many blocks a multiprocessor (a register cap).
template <int U, int kMinBlocks = 0>
__global__ void __launch_bounds__(kMmaWarps * 32, kMinBlocks)
    gemv_bf16_mma_kernel(const uint16_t* w, int64_t out, int64_t in, const float* x, int rows, int64_t k_per_split,
                         float* partial) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int64_t o0 = (static_cast<int64_t>(blockIdx.x) * kMmaWarps + warp) * 16 * kMmaTiles;
  if (o0 >= out) return;
  const int64_t k_begin = blockIdx.y * k_per_split, k_end = min(in, k_begin + k_per_split);
  const uint4* wrow[kMmaTiles][2];
#pragma unroll
  for (int t = 0; t < kMmaTiles; ++t)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t o = o0 + 16 * t + g + 8 * r;
      wrow[t][r] = o < out ? reinterpret_cast<const uint4*>(w + o * in) : nullptr;
    }
  const float* xrow = g < rows ? x + g * in : nullptr;
  float acc[kMmaTiles][4] = {};
  for (int64_t k = k_begin; k < k_end; k += 32 * U) {
    uint4 wv[U][kMmaTiles][2];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t chunk = (k + 32 * u + 8 * c) / 8;
      const bool in_slice = k + 32 * u < k_end;
#pragma unroll
      for (int t = 0; t < kMmaTiles; ++t)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          wv[u][t][r] = wrow[t][r] != nullptr && in_slice ? load_nc(wrow[t][r] + chunk) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (k + 32 * u >= k_end) break;
      const int64_t chunk = (k + 32 * u + 8 * c) / 8;
      float4 xa = make_float4(0, 0, 0, 0), xb = xa;
      if (xrow != nullptr) {
        xa = __ldg(reinterpret_cast<const float4*>(xrow + 8 * chunk));
        xb = __ldg(reinterpret_cast<const float4*>(xrow + 8 * chunk + 4));
      }
      // B fragments of the chunk's two k-steps, hi and lo.
      uint32_t b[2][2][2];
      b[0][0][0] = pack_bf16x2(xa.x, xa.y), b[0][0][1] = pack_bf16x2(xa.z, xa.w);
      b[1][0][0] = pack_bf16x2(xb.x, xb.y), b[1][0][1] = pack_bf16x2(xb.z, xb.w);
      b[0][1][0] = pack_bf16x2_rest(xa.x, xa.y, b[0][0][0]), b[0][1][1] = pack_bf16x2_rest(xa.z, xa.w, b[0][0][1]);
      b[1][1][0] = pack_bf16x2_rest(xb.x, xb.y, b[1][0][0]), b[1][1][1] = pack_bf16x2_rest(xb.z, xb.w, b[1][0][1]);
#pragma unroll
      for (int t = 0; t < kMmaTiles; ++t) {
        const uint4 lo = wv[u][t][0], hi = wv[u][t][1];  // rows g, g + 8
        const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y}, a1[4] = {lo.z, hi.z, lo.w, hi.w};
#pragma unroll
        for (int part = 0; part < 2; ++part) {
          mma_bf16_16816(acc[t], a0, b[0][part][0], b[0][part][1]);
          mma_bf16_16816(acc[t], a1, b[1][part][0], b[1][part][1]);
        }
      }
    }
  }
  // acc[t]: (feature o0 + 16t + g | + 8, rows 2c, 2c + 1).
  float* p = partial + static_cast<int64_t>(blockIdx.y) * rows * out;
#pragma unroll
  for (int t = 0; t < kMmaTiles; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t o = o0 + 16 * t + g + 8 * (e / 2);
      const int r = 2 * c + e % 2;
      if (o < out && r < rows) p[r * out + o] = acc[t][e];
    }
}

// gemv_bf16_mma_kernel with the chunks per lane in flight and the residency that
// PODKV_CUDA_GEMV_MMA_GROUP asks for: "4,5" (the default: 4 chunks, at least 5 blocks a multiprocessor),
// "4,0" (4 chunks, no minimum), 2 or 8; read once. Session 51 on an H100, Llama-3-8B shape, decode at
// 8K, tok/s of 4 chunks with no minimum (103 registers) against the kernel before (one chunk at a
// time, 56 registers): batch 8 716.8 / 711.4 against 636.7 / 639.3 (1.12x), batch 4 434.0 against
// 370.3 (1.17x), batch 2 243.9 against 201.6 (1.21x), batch 8 at 32K 407.5 against 381.9 (1.07x); 2
// chunks (64 registers) 653.7 / 656.5 at batch 8, 8 chunks (176 registers: two blocks of 4 warps a
// multiprocessor) 581.4 / 578.3. Session 52 (another H100, interleaved): at least 5 blocks (96
// registers) against none, batch 8 725.3 / 725.8 / 711.6 / 711.1 against 716.8 / 716.0 / 703.6 / 704.2
// (1.011x-1.013x), batch 4 433.6 / 434.0 against 428.7 / 428.2, batch 2 245.8 / 247.8 against 241.1 /
// 244.6, batch 8 at 32K 406.5 / 411.4 against 404.3 / 408.1; 3, 5 and 6 chunks, 3 under a minimum of 6
// blocks, and splits for 2 to 4 waves were no faster (session52-2026-12-07.md).
using MmaKernel = void (*)(const uint16_t*, int64_t, int64_t, const float*, int, int64_t, float*);
MmaKernel mma_kernel() {
  static const MmaKernel kernel = [] {
    const char* e = std::getenv("PODKV_CUDA_GEMV_MMA_GROUP");
    const int group = e != nullptr ? std::atoi(e) : 4;
    const char* comma = e != nullptr ? std::strchr(e, ',') : nullptr;
    const int min_blocks = comma != nullptr ? std::atoi(comma + 1) : 5;
    if (group == 2) return gemv_bf16_mma_kernel<2>;
    if (group == 8) return gemv_bf16_mma_kernel<8>;
    return min_blocks == 0 ? gemv_bf16_mma_kernel<4> : gemv_bf16_mma_kernel<4, 5>;
  }();
  return kernel;
}

__global__ void sum_splits_kernel(const float* partial, int splits, int64_t n, int64_t out, float* y, const float* bias) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float s = bias != nullptr ? bias[i % out] : 0.0f;
  for (int k = 0; k < splits; ++k) s += partial[k * n + i];
  y[i] = s;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool gemv_uses_mma(DType dtype, int64_t in, int64_t rows) { return dtype == DType::BF16 && in % 32 == 0 && rows >= 2; }

size_t gemv_scratch_floats(DType dtype, int64_t out, int64_t in, int64_t rows, int num_sms) {
  if (!gemv_uses_mma(dtype, in, rows)) return 0;
  return static_cast<size_t>(gemv_splits(out, in, num_sms)) * static_cast<size_t>(rows) * static_cast<size_t>(out);
}

int gemv_splits(int64_t out, int64_t in, int num_sms) {
  // One wave of the kernel's resident warps, each slice at least 256 inputs. (The rule before session
  // 51, 16 warps per SM rounded up, suited the one-chunk kernel's 36 resident warps; with this
  // kernel's 16 it would make gate | up 1.3 waves.)
  static const int per_sm = [] {
    int blocks = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, mma_kernel(), kMmaWarps * 32, 0) != cudaSuccess) {
      (void)cudaGetLastError();  // never seen: four blocks, what the default kernel's registers allow
      blocks = 4;
    }
    return std::max(1, blocks) * kMmaWarps;
  }();
  const int64_t warps = (out + 16 * kMmaTiles - 1) / (16 * kMmaTiles);
  const int64_t want = static_cast<int64_t>(per_sm) * num_sms / warps;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(want, in / 256)));
}

void gemv(DType dtype, const void* w, int64_t out, int64_t in, const float* x, int64_t rows, float* y,
          const float* bias, float* scratch, int num_sms, cudaStream_t stream) {
  check(rows <= kGemvMaxRows, "cuda gemv: " + std::to_string(rows) + " rows (at most 8)");
  check(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::Q8_0,
        std::string("cuda matmul: weights of type ") + dtype_name(dtype) + " are not supported on the device");
  if (rows == 0 || out == 0) return;
  if (gemv_uses_mma(dtype, in, rows) && aligned16(w) && aligned16(x)) {
    const int splits = gemv_splits(out, in, num_sms);
    const int64_t k_per_split = (in / 32 + splits - 1) / splits * 32;
    const int64_t per_block = 16 * kMmaTiles * kMmaWarps;
    const dim3 grid(static_cast<unsigned>((out + per_block - 1) / per_block), static_cast<unsigned>(splits));
    mma_kernel()<<<grid, kMmaWarps * 32, 0, stream>>>(static_cast<const uint16_t*>(w), out, in, x,
                                                      static_cast<int>(rows), k_per_split, scratch);
    check_launch("gemv_bf16_mma_kernel");
    const int64_t n = rows * out;
    sum_splits_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(scratch, splits, n, out, y, bias);
    check_launch("sum_splits_kernel");
    return;
  }
  const RowVariant variant = row_variant();
  if (rows == 1 && variant.r > 0 && dtype == DType::BF16 && in % 8 == 0 && aligned16(w) && aligned16(x)) {
    const auto* w16 = static_cast<const uint16_t*>(w);
    if (variant.r == 1) launch_row_kernel<1>(variant.u, w16, out, in, x, y, bias, num_sms, stream);
    else if (variant.r == 2) launch_row_kernel<2>(variant.u, w16, out, in, x, y, bias, num_sms, stream);
    else launch_row_kernel<4>(variant.u, w16, out, in, x, y, bias, num_sms, stream);
    return;
  }
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

bool gemv_swiglu_row(DType dtype, const void* w, int64_t out, int64_t in, const float* x, float* y, int num_sms,
                     cudaStream_t stream) {
  const RowVariant variant = row_variant();
  if (variant.r == 0 || dtype != DType::BF16 || in % 8 != 0 || out % 2 != 0 || !aligned16(w) || !aligned16(x))
    return false;
  if (out > 0)
    launch_row_kernel<2, Epilogue::kSwiglu>(variant.u, static_cast<const uint16_t*>(w), out, in, x, y, nullptr, num_sms,
                                            stream);
  return true;
}

bool gemv_residual_norm_row(DType dtype, const void* w, int64_t out, int64_t in, const float* x, float* y,
                            const float* norm_weight, double eps, float* norm_out, unsigned* counter, int num_sms,
                            cudaStream_t stream) {
  const RowVariant variant = row_variant();
  if (variant.r == 0 || dtype != DType::BF16 || in % 8 != 0 || !aligned16(w) || !aligned16(x) || out == 0)
    return false;
  const auto* w16 = static_cast<const uint16_t*>(w);
  const NormAfter norm{norm_weight, eps, norm_out, counter};
  constexpr Epilogue E = Epilogue::kResidualNorm;
  if (variant.r == 1) launch_row_kernel<1, E>(variant.u, w16, out, in, x, y, nullptr, num_sms, stream, norm);
  else if (variant.r == 2) launch_row_kernel<2, E>(variant.u, w16, out, in, x, y, nullptr, num_sms, stream, norm);
  else launch_row_kernel<4, E>(variant.u, w16, out, in, x, y, nullptr, num_sms, stream, norm);
  return true;
}

}  // namespace podkv::cuda
