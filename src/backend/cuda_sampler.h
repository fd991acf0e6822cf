// Next-token draws on the GPU (cuda/sampling.cu) from logits that stay in
// device memory: per step the requests go up (parameters, penalty tokens and
// the uniform numbers the host samplers drew) and only token ids come back.
#pragma once

#if defined(PODKV_HAVE_CUDA)

#include <cstdint>
#include <vector>

#include "backend/cuda_backend_ops.h"
#include "cuda/kernels.h"
#include "sampling/sampler.h"

namespace podkv {

class CudaSampler {
 public:
  explicit CudaSampler(CudaBackendOps& ops) : ops_(ops) {}
  // logits [rows, vocab] in device memory, requests[r] row r's draw; tokens [rows] (host) gets the
  // ids, -1 where the host must sample the row (a NaN or +inf logit, or every logit -inf: the host
  // sampler reports them). Synchronises.
  void sample(const float* logits, int64_t rows, int32_t vocab, const SampleRequest* const* requests,
              int32_t* tokens);

 private:
  CudaBackendOps& ops_;
  std::vector<cuda::SampleRowArgs> args_;
  std::vector<cuda::SamplePenaltyArgs> penalties_;
  DeviceBuffer args_device_, penalties_device_, scratch_, tokens_device_;
  DeviceBuffer tickets_;  // greedy_rows' tickets per row, zero between launches
};

}  // namespace podkv

#endif
