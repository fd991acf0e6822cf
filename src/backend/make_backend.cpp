#include "backend/make_backend.h"

#include "backend/cpu_backend.h"
#include "backend/cuda_backend.h"
#include "util/error.h"

namespace podkv {

void check_device_options(const std::string& device, const std::string& cuda_weights) {
  if (device != "cpu" && device != "cuda") throw Error("--device: unknown device '" + device + "' (known: cpu, cuda)");
  // Checked on the CPU too, which ignores it: a misspelt value is a mistake wherever it is given.
  if (cuda_weights != "bf16" && cuda_weights != "f32")
    throw Error("--cuda-weights: unknown type '" + cuda_weights + "' (known: bf16, f32)");
}

std::unique_ptr<Backend> make_backend(const std::string& device, const Model& model, const std::string& cuda_weights) {
  check_device_options(device, cuda_weights);
  if (device == "cpu") return std::make_unique<CpuBackend>(model);
#if defined(PODKV_HAVE_CUDA)
  if (!cuda_device_available()) throw Error("--device cuda: no CUDA device is visible");
  CudaBackendOptions options;
  options.weights = cuda_weights == "f32" ? DType::F32 : DType::BF16;
  return std::make_unique<CudaBackend>(model, options);
#else
  throw Error("--device cuda: this podkv was built without CUDA (configure with -DPODKV_CUDA=ON)");
#endif
}

}  // namespace podkv
