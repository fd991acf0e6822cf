// The warp-specialised wgmma prefill kernel (attention_prefill_producer.cu), which prefill_wgmma
// takes for two warpgroups per block unless PODKV_CUDA_PREFILL_PRODUCER=0. The preconditions of
// prefill_wgmma (kernels.h); `uniform` and `step_keys` (64 or 128) are its WgmmaPrefill's.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/device_step.h"

namespace podkv::cuda {

void prefill_producer(const DeviceStep& step, const AttentionLaunch& launch, const float* q, const int32_t* tiles,
                      int64_t num_tiles, bool uniform, int step_keys, cudaStream_t stream);

}  // namespace podkv::cuda
