// y[out] = W[out, in] · x[in] (+ bias) for one row of x, W in bf16: the decode step's weight
// matmuls, where the whole cost is reading W once (about 15 GB a step for Llama-3-8B).
//
// A persistent block per SM streams its share of W into a ring of shared-memory stages with bulk
// copies (cp.async.bulk, completing on an mbarrier), so that the bytes in flight do not depend on
// registers: one producer warp keeps kStages stages of 16 rows x kCols columns (32 KB) requested
// while eight consumer warps multiply the stage in front of them, each two rows of it, x read
// from global memory (L1). Rows go to blocks in tiles of 16, tile t to block t % blocks; a tile's
// columns are its stages in order. Each lane sums the 16-byte chunks k, k + 32, ... of a row in
// that order, as gemv_bf16_row_kernel does: the same float32 result.
//
// With programmatic dependent launch (launch.cuh) the producer does not wait for the previous
// kernel: W is written by no kernel, so the first kStages stages (192 KB per SM, about 25 MB on
// an H200) stream in while the kernel before this one (a norm, the attention merge, SwiGLU) runs.
// The consumers wait before they read x.
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"
#include "cuda/launch.cuh"

namespace podkv::cuda {

namespace {

constexpr int kConsumerWarps = 8;
constexpr int kTileRows = 2 * kConsumerWarps;              // two rows per consumer warp
constexpr int kCols = 1024;                                // bf16 columns per stage row: 2 KB
constexpr int kStages = 6;                                 // 6 x 32 KB = 192 KB of shared memory
constexpr int kStageBytes = kTileRows * kCols * 2;
constexpr int kThreads = (kConsumerWarps + 1) * 32;        // + the producer warp

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void barrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(count) : "memory");
}

__device__ __forceinline__ void barrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(shared_address(bar)) : "memory");
}

__device__ __forceinline__ void barrier_arrive_expect(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)), "r"(bytes)
               : "memory");
}

// Waits until the barrier's phase `parity` has completed.
__device__ __forceinline__ void barrier_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
  }
}

// bytes (a multiple of 16, both addresses 16-byte aligned) from global to shared memory, counted
// on `bar` when they have landed.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
}

__global__ void __launch_bounds__(kThreads, 1)
    gemv_stream_kernel(const uint16_t* w, int64_t out, int64_t in, const float* x, float* y, const float* bias) {
  extern __shared__ __align__(128) uint8_t ring[];  // kStages x [kTileRows][kCols] bf16
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  allow_dependents();
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) barrier_init(&full[s], 1), barrier_init(&empty[s], kConsumerWarps);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const int64_t tiles = (out + kTileRows - 1) / kTileRows;
  const int64_t chunks = (in + kCols - 1) / kCols;  // stages per tile
  const int64_t my_tiles = tiles > blockIdx.x ? (tiles - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
  const int64_t stages = my_tiles * chunks;

  if (warp == kConsumerWarps) {
    // The producer: stage i is tile blockIdx.x + (i / chunks) * gridDim.x, columns (i % chunks) * kCols.
    for (int64_t i = 0; i < stages; ++i) {
      const int slot = static_cast<int>(i % kStages);
      if (i >= kStages) barrier_wait(&empty[slot], static_cast<uint32_t>((i / kStages - 1) & 1));
      const int64_t row0 = (blockIdx.x + (i / chunks) * gridDim.x) * kTileRows;
      const int64_t col0 = (i % chunks) * kCols;
      const int rows = static_cast<int>(min(static_cast<int64_t>(kTileRows), out - row0));
      const int cols = static_cast<int>(min(static_cast<int64_t>(kCols), in - col0));
      if (lane == 0) barrier_arrive_expect(&full[slot], static_cast<uint32_t>(rows * cols * 2));
      __syncwarp();
      if (lane < rows)
        bulk_copy(ring + slot * kStageBytes + lane * kCols * 2, w + (row0 + lane) * in + col0,
                  static_cast<uint32_t>(cols * 2), &full[slot]);
    }
    return;
  }

  // The consumers: warp c takes rows 2c and 2c + 1 of each tile.
  wait_for_inputs();
  const float4* x4 = reinterpret_cast<const float4*>(x);
  for (int64_t i = 0; i < stages;) {
    const int64_t row0 = (blockIdx.x + (i / chunks) * gridDim.x) * kTileRows + 2 * warp;
    float acc[2] = {0.0f, 0.0f};
    for (int64_t c = 0; c < chunks; ++c, ++i) {
      const int slot = static_cast<int>(i % kStages);
      barrier_wait(&full[slot], static_cast<uint32_t>((i / kStages) & 1));
      const uint4* stage = reinterpret_cast<const uint4*>(ring + slot * kStageBytes) + 2 * warp * (kCols / 8);
      const int64_t k_base = c * (kCols / 8);  // 16-byte chunk of the row where the stage starts
      const int64_t k_end = min(static_cast<int64_t>(kCols / 8), in / 8 - k_base);
#pragma unroll
      for (int u = 0; u < kCols / 8 / 32; ++u) {
        const int k = lane + 32 * u;
        if (k < k_end) {
          const float4 a = __ldg(x4 + 2 * (k_base + k)), b = __ldg(x4 + 2 * (k_base + k) + 1);
          acc[0] += dot8_bf16(stage[k], a, b);
          acc[1] += dot8_bf16(stage[kCols / 8 + k], a, b);
        }
      }
      __syncwarp();
      if (lane == 0) barrier_arrive(&empty[slot]);
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float s = warp_sum(acc[j]);
      if (lane == 0 && row0 + j < out) y[row0 + j] = s + (bias != nullptr ? bias[row0 + j] : 0.0f);
    }
  }
}

}  // namespace

bool gemv_stream_fits(int64_t in) { return in % 8 == 0; }

void gemv_stream(const uint16_t* w, int64_t out, int64_t in, const float* x, float* y, const float* bias, int num_sms,
                 cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(kStages) * kStageBytes;
  static const bool configured = [&] {
    check_cuda(cudaFuncSetAttribute(gemv_stream_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)),
               "cudaFuncSetAttribute(gemv_stream_kernel)");
    return true;
  }();
  (void)configured;
  const int64_t tiles = (out + kTileRows - 1) / kTileRows;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(tiles, num_sms));
  launch_chained(gemv_stream_kernel, blocks, kThreads, smem, stream, w, out, in, x, y, bias);
}

}  // namespace podkv::cuda
