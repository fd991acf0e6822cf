// Greedy draws on the GPU where every row of a call is greedy with no penalty: the argmax of each
// logits row spread over many blocks. sampling.cu's kernel gives a row one block of 1024 threads,
// which reads a 128K-token row twice (the NaN check, then the argmax) through one multiprocessor:
// 17 us a decode step on an H200 (session 42's Nsight Compute durations), about 0.35% of a
// batch-1 step at 4K. Here each block takes one slice of a row (kSliceLogits logits, each thread's
// loads issued before its comparisons), and the row's last block to finish (a ticket per row)
// combines the slices' results. The answer is sample_rows_kernel's for such rows: -1 where the row
// has a NaN or +inf (the host reports it) or every logit is -inf, else the largest logit's id, the
// lowest id among equal ones (torch.argmax's rule, and the CPU's LogitSampler).
// Session 52, an H100 (Nsight Compute, a 128,256-token row): 17.46 us -> 5.63 us a step.
#include <cstdint>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
constexpr int kSliceLogits = kThreads * kPerThread;  // 4096 logits a block
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;

struct alignas(16) SliceBest {
  float value;
  int32_t index;
  int32_t bad;  // a NaN or +inf in the slice
  int32_t unused;
};

__device__ __forceinline__ bool better(float v, int32_t i, float value, int32_t index) {
  return v > value || (v == value && i < index);
}

// Across a warp: the best (value, index) and whether any lane saw a bad logit, in lane 0.
__device__ __forceinline__ void warp_best(float& value, int32_t& index, int& bad) {
  bad = __any_sync(kFull, bad);
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_down_sync(kFull, value, o);
    const int32_t i = __shfl_down_sync(kFull, index, o);
    if (better(v, i, value, index)) value = v, index = i;
  }
}

// grid (slices, rows), kThreads threads. parts [rows][slices]; tickets [rows], zero between launches
// (the last block of a row puts its ticket back to zero).
__global__ void __launch_bounds__(kThreads)
    greedy_rows_kernel(const float* logits, int32_t V, SliceBest* parts, unsigned* tickets, int32_t* tokens) {
  __shared__ SliceBest warp_parts[kWarps];
  __shared__ bool last;
  const int slices = gridDim.x, slice = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = blockIdx.y;
  const float* l = logits + row * V;
  const int32_t begin = slice * kSliceLogits;
  const float kInf = __int_as_float(0x7f800000);

  // Coalesced: element k of thread t is begin + k * kThreads + t. Past the row's end -inf, with an
  // index above every real one (so it never wins a tie against a logit of the row).
  float x[kPerThread];
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int32_t i = begin + k * kThreads + threadIdx.x;
    x[k] = i < V ? __ldcg(l + i) : -kInf;
  }
  float value = -kInf;
  int32_t index = 0x7fffffff;
  int bad = 0;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int32_t i = begin + k * kThreads + threadIdx.x;
    bad |= isnan(x[k]) || x[k] == kInf;
    if (better(x[k], i, value, index)) value = x[k], index = i;  // a NaN is never better
  }
  warp_best(value, index, bad);
  if (lane == 0) warp_parts[warp] = SliceBest{value, index, bad, 0};
  __syncthreads();
  if (threadIdx.x == 0) {
    SliceBest b = warp_parts[0];
    for (int w = 1; w < kWarps; ++w) {
      const SliceBest& p = warp_parts[w];
      b.bad |= p.bad;
      if (better(p.value, p.index, b.value, b.index)) b.value = p.value, b.index = p.index;
    }
    parts[row * slices + slice] = b;
    __threadfence();  // the part is visible to the block that takes the last ticket
    last = atomicAdd(tickets + row, 1u) == static_cast<unsigned>(slices - 1);
  }
  __syncthreads();
  if (!last || warp != 0) return;
  // The row's last block: its first warp combines the slices (in any order: the rule is a total order).
  value = -kInf, index = 0x7fffffff, bad = 0;
  for (int s = lane; s < slices; s += 32) {
    const int4 p = __ldcg(reinterpret_cast<const int4*>(parts + row * slices + s));  // {value, index, bad}
    bad |= p.z;
    if (better(__int_as_float(p.x), p.y, value, index)) value = __int_as_float(p.x), index = p.y;
  }
  warp_best(value, index, bad);
  if (lane == 0) {
    tokens[row] = bad || value == -kInf ? -1 : index;
    tickets[row] = 0;
  }
}

}  // namespace

int greedy_slices(int32_t vocab) { return (vocab + kSliceLogits - 1) / kSliceLogits; }

void greedy_rows(const float* logits, int64_t rows, int32_t vocab, void* parts, unsigned* tickets, int32_t* tokens,
                 cudaStream_t stream) {
  if (rows == 0) return;
  check(rows <= kGreedyMaxRows, "cuda greedy_rows: " + std::to_string(rows) + " rows (at most " +
                                    std::to_string(kGreedyMaxRows) + " a launch)");
  const dim3 grid(static_cast<unsigned>(greedy_slices(vocab)), static_cast<unsigned>(rows));
  greedy_rows_kernel<<<grid, kThreads, 0, stream>>>(logits, vocab, static_cast<SliceBest*>(parts), tickets, tokens);
  check_launch("greedy_rows_kernel");
}

}  // namespace podkv::cuda
