#include "backend/backend_ops.h"

#include "backend/cpu_backend_ops.h"
#include "backend/cuda_backend_ops.h"

namespace podkv {

std::vector<std::string> backend_ops_names() {
#if defined(PODKV_HAVE_CUDA)
  // Built with CUDA: the GPU backend joins when the runtime sees a device.
  if (cuda_device_available()) return {"cpu", "cuda"};
#endif
  return {"cpu"};
}

std::unique_ptr<BackendOps> make_backend_ops(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackendOps>();
#if defined(PODKV_HAVE_CUDA)
  if (name == "cuda") return std::make_unique<CudaBackendOps>();
#endif
  std::string known;
  for (const std::string& n : backend_ops_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error("unknown backend '" + name + "' (available: " + known + ")");
}

}  // namespace podkv
