// Host-side CUDA error handling: every runtime and cuBLAS call goes through
// these, so a failure becomes podkv::Error naming the call and the error
// (the library never prints or exits).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdio>
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

// cudaMalloc that throws Error naming `what`, the size and the free memory.
inline void* device_alloc(size_t bytes, const char* what) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes > 0 ? bytes : 1);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the error state of the failed allocation
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    auto gib = [](size_t b) {
      char s[32];
      std::snprintf(s, sizeof s, "%.2f GiB", static_cast<double>(b) / (1u << 30));
      return std::string(s);
    };
    throw Error("cuda: cannot allocate " + gib(bytes) + " for " + what + " (" + gib(free_bytes) + " free of " +
                gib(total) + "): " + cudaGetErrorString(e));
  }
  return p;
}

}  // namespace podkv::cuda

#define PODKV_CUDA_CHECK(call) ::podkv::cuda::check_cuda((call), #call)
#define PODKV_CUBLAS_CHECK(call) ::podkv::cuda::check_cublas((call), #call)
