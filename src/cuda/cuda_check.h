// Host-side CUDA error handling: every runtime and cuBLAS call goes through
// these, so a failure becomes podkv::Error naming the call and the error
// (the library never prints or exits).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "util/error.h"

namespace podkv::cuda {

inline void check_cuda(cudaError_t e, const char* call) {
  if (e != cudaSuccess)
    throw Error(std::string("cuda: ") + call + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

inline void check_cublas(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cublas: ") + call + " failed: " + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")");
}

// After a kernel launch: a bad configuration shows here, a fault at the next synchronising call.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

}  // namespace podkv::cuda

#define PODKV_CUDA_CHECK(call) ::podkv::cuda::check_cuda((call), #call)
#define PODKV_CUBLAS_CHECK(call) ::podkv::cuda::check_cublas((call), #call)
