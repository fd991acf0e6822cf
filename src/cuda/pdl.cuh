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
//  - without the attribute (PODKV_CUDA_PDL=0, an older GPU) both calls are no-ops.
// On by default for decode's launches, not for the prompt's RoPE kernel (PdlUse): session 41 on an
// H100 (Llama-3-8B shape, interleaved passes), all on against all off: batch 1 at 4K 158.82 / 158.86
// / 158.89 tok/s against 157.91 / 157.93 / 157.96 (1.006x), 32K 128.63 / 128.61 against 127.51 /
// 127.50 (1.009x), batch 8 at 8K 1.005x dense and 1.009x PoD, batch 32 0.996x / 0.998x; a 32K
// prompt 23,535 / 23,535 against 23,622 / 23,605 (0.997x), so prompts keep plain launches
// (PODKV_CUDA_PDL=1: those too). Session 28's loss at 32K on the H200 (0.984x) came before the
// attention kernel's trigger moved to its end. Since session 43 the decode chain (a cooperative
// launch) is a dependent too, of the merge, which triggers at its start (decode_chain.cu).
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

// Which launch asks: a decode step's (the one-row RoPE + KV write, decode attention, its merge) or the
// prompt's RoPE kernel.
enum class PdlUse { kDecode, kPrompt };

// Whether launch_pdl sets the attribute for `use`, on compute capability 9.0+: PODKV_CUDA_PDL unset,
// decode's launches; "1", the prompt's too; "0", none. Read once (the first device's answer).
inline bool pdl_enabled(PdlUse use) {
  static const int mode = [] {  // 0: none, 1: decode, 2: all
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess || major < 9)
      return 0;
    const char* e = std::getenv("PODKV_CUDA_PDL");
    if (e == nullptr) return 1;
    return std::strcmp(e, "1") == 0 ? 2 : std::strcmp(e, "0") == 0 ? 0 : 1;
  }();
  return use == PdlUse::kDecode ? mode >= 1 : mode == 2;
}

// kernel<<<grid, block, smem, stream>>>(args...), as a programmatic dependent of the work before it
// on the stream where pdl_enabled(use).
template <typename... Params, typename... Args>
void launch_pdl(PdlUse use, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                const char* what, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = pdl_enabled(use) ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), what);
}

}  // namespace podkv::cuda
