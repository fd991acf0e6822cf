// The merge of split-KV decode attention's chunks (attention_decode.cu) in a kernel of its own: per
// (row, query head), the chunks' partials combined by their log-sum-exp into the output and the
// anchor gate (decode_merge.cuh's merge_head, which decode_chain's first stage runs too).
#include <cstdlib>
#include <string>

#include "cuda/attention_decode.cuh"
#include "cuda/cuda_check.h"
#include "cuda/decode_merge.cuh"
#include "cuda/kernels.h"
#include "cuda/pdl.cuh"

namespace podkv::cuda {

namespace {

using namespace decode;

// One block per (row, query head), the whole head_dim: with 512 threads (many chunks: batch 1, 64
// chunks at 4K keys) four groups, a thread waiting on a quarter of the chunks' loads.
template <int kThreads, int kPrefetch>
__global__ void __launch_bounds__(kThreads) merge_kernel(DecodeMerge m) {
  pdl_wait();  // the partials of the kernel before (pdl.cuh)
  merge_head<kThreads, kMaxHeadDim, kPrefetch>(m, blockIdx.x, static_cast<int>(blockIdx.y), 0);
}

// PODKV_CUDA_MERGE_PREFETCH=0: the merge loads its chunks' outputs after the statistics (to compare).
bool merge_prefetch() {
  static const bool on = [] {
    const char* e = std::getenv("PODKV_CUDA_MERGE_PREFETCH");
    return e == nullptr || std::string(e) != "0";
  }();
  return on;
}

}  // namespace

void decode_merge(const DecodeMerge& m, cudaStream_t stream) {
  if (m.splits == 0 || m.num_decode_rows == 0) return;
  const dim3 grid(static_cast<unsigned>(m.num_decode_rows), static_cast<unsigned>(m.num_heads));
  // A programmatic dependent of the attention kernel (pdl.cuh): its blocks wait at their start.
  auto merge = [&](auto kernel, int threads) { launch_pdl(kernel, grid, dim3(threads), 0, stream, "merge_kernel", m); };
  // With the prefetch: up to 128 chunks over 4 groups (32 each), up to 256 (64 each: two attention
  // blocks per multiprocessor give a 4K row 129 or more chunks), up to 16 over one; more chunks
  // than those are loaded after the statistics.
  const bool prefetch = merge_prefetch();
  const int splits = m.splits;
  if (splits >= 16 && prefetch && splits <= 128) merge(merge_kernel<512, 32>, 512);
  else if (splits >= 16 && prefetch) merge(merge_kernel<512, 64>, 512);
  else if (splits >= 16) merge(merge_kernel<512, 0>, 512);
  else if (prefetch) merge(merge_kernel<128, 16>, 128);
  else merge(merge_kernel<128, 0>, 128);
}

namespace decode {

DecodeMerge merge_of(const DeviceStep& step, const AttentionLaunch& launch, int splits, const float* partials) {
  DecodeMerge m;
  m.partials = partials, m.splits = splits;
  m.num_heads = launch.num_heads, m.head_dim = step.head_dim, m.layer = launch.layer;
  m.rows = step.rows, m.num_decode_rows = step.num_decode_rows, m.decode_rows = step.decode_rows;
  m.out = launch.out, m.all_gates = launch.all_gates;
  return m;
}

}  // namespace decode

}  // namespace podkv::cuda
