// Whether launch_chained (launch.cuh) sets the programmatic-dependent-launch attribute.
#include "cuda/launch.cuh"

#include <cstdlib>
#include <cstring>

namespace podkv::cuda {

bool chained_launches() {
  static const bool on = [] {
    const char* env = std::getenv("PODKV_CUDA_PDL");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return on;
}

}  // namespace podkv::cuda
