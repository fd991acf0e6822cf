// Programmatic dependent launch (PDL, sm_90): a kernel launched with
// launch_chained may start while the kernel before it in the stream is still
// finishing, so that launch latency and the previous kernel's tail overlap
// this kernel's prologue. A decode step is a chain of ~350 small kernels
// (Llama-3-8B: 11 per layer), each waiting for the last one's output, and the
// gaps between them are a measurable part of the step.
//
// The contract, for every kernel launched through launch_chained:
//  - it calls allow_dependents() (anywhere; at the top is best: the next
//    kernel's blocks then take free SM slots as soon as this one's last block
//    is running);
//  - before it reads anything an earlier kernel wrote, or writes anything at
//    all to global memory, it calls wait_for_inputs(), which returns once the
//    previous kernel (and so, transitively, every earlier one) has finished
//    and its writes are visible. Before the wait it may read only what no
//    kernel of the stream writes: weights, and the step's tables uploaded
//    before the step's first kernel.
// Every thread that writes must pass the wait; a kernel whose threads all
// return before it would end before its predecessor and break the chain, so
// kernels wait before any early return.
//
// Kernels launched without the attribute (cuBLAS, older launches) serialise
// as usual; the device calls are no-ops there and below sm_90.
// PODKV_CUDA_PDL=0 turns the attribute off (for timing against it).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "cuda/cuda_check.h"

namespace podkv::cuda {

__device__ __forceinline__ void wait_for_inputs() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether launches carry the PDL attribute: a device of compute capability 9.0 or
// newer, and PODKV_CUDA_PDL not "0". Read once (launch.cu).
bool chained_launches();

// kernel<<<grid, block, smem, stream>>>(args...) with the PDL attribute when chained_launches().
template <typename... Params, typename... Args>
void launch_chained(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                    Args&&... args) {
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = chained_launches() ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), "cudaLaunchKernelEx");
}

}  // namespace podkv::cuda
