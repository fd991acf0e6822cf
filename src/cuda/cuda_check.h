// Host-side CUDA error handling: every runtime and cuBLAS call goes through
// these, so a failure becomes podkv::Error naming the call and the error
// (the library never prints or exits).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <utility>

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

// Lets `kernel` take `bytes` of dynamic shared memory (cudaFuncAttributeMaxDynamicSharedMemorySize) on
// the current device. The attribute stays set, so it is asked only when more is needed than before:
// kernels launched on every decode step would otherwise pay the call (about 1 us) per launch.
inline void allow_dynamic_smem(const void* kernel, size_t bytes, const char* what) {
  static std::mutex mutex;
  static std::map<std::pair<int, const void*>, size_t> allowed;
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  const std::lock_guard<std::mutex> lock(mutex);
  size_t& now = allowed[{device, kernel}];
  if (bytes <= now) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), what);
  now = bytes;
}

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
