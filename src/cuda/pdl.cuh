// Programmatic dependent launch (compute capability 9.0+): a decode step is a chain of short
// kernels per layer (the chain's last projection, RoPE + KV write, split-KV attention, its merge),
// each a few microseconds of dependent memory round trips at batch 1. Launched with
// cudaLaunchAttributeProgrammaticStreamSerialization, a kernel's blocks start while the kernel
// before it is still running (once each of that kernel's blocks has called pdl_launch_dependents,
// or exited) and do what depends only on the step's metadata (positions, page tables), then
// pdl_wait for the kernel before to finish and its writes to be visible.
// Rules that keep this correct:
//  - every thread of a kernel launched this way calls pdl_wait before it reads anything an earlier
//    kernel of the step wrote, and before it returns (so that the kernel never finishes before the
//    one it depends on: a later plainly launched kernel waits only for its predecessor);
//  - without the attribute (the default, an older GPU) both calls are no-ops.
// Off by default: PODKV_CUDA_PDL=1 turns it on. Session 28 on the H200 (Llama-3-8B shape, batch 1,
// two passes): 4K 197.95 / 198.00 tok/s against 197.02 / 197.12 without (1.005x), 32K 161.47
// against 164.16 (0.984x). The loss at 32K is thought to come from the merge's blocks, launched at the
// attention kernel's start, taking the room of its second block per multiprocessor (its grid is two
// blocks per multiprocessor there): docs/gpu-bench/kernel-tuning/session29-decode-untested.patch
// moves that trigger to the kernel's end (not run on a GPU yet).
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "cuda/cuda_check.h"

namespace podkv::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether launch_pdl sets the attribute: PODKV_CUDA_PDL=1 and compute capability 9.0+. Read once
// (the first device's answer).
inline bool pdl_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("PODKV_CUDA_PDL");
    if (e == nullptr || std::strcmp(e, "1") != 0) return false;
    int device = 0, major = 0;
    return cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 9;
  }();
  return on;
}

// kernel<<<grid, block, smem, stream>>>(args...), as a programmatic dependent of the work before it
// on the stream where pdl_enabled().
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const char* what,
                Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = pdl_enabled() ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), what);
}

}  // namespace podkv::cuda
