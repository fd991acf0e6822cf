#include "backend/backend_ops.h"

#include "backend/cpu_backend_ops.h"

namespace podkv {

std::vector<std::string> backend_ops_names() {
  // A CUDA backend adds "cuda" here under PODKV_HAVE_CUDA.
  return {"cpu"};
}

std::unique_ptr<BackendOps> make_backend_ops(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackendOps>();
  std::string known;
  for (const std::string& n : backend_ops_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error("unknown backend '" + name + "' (available: " + known + ")");
}

}  // namespace podkv
