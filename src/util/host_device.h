// PODKV_HOST_DEVICE marks a function that CUDA code calls on the device and C++ code on the host
// (the same arithmetic in both: the CPU tests check what the kernels run).
#pragma once

#if defined(__CUDACC__)
#define PODKV_HOST_DEVICE __host__ __device__
#define PODKV_HOST_DEVICE_INLINE __host__ __device__ __forceinline__
#else
#define PODKV_HOST_DEVICE
#define PODKV_HOST_DEVICE_INLINE inline
#endif
