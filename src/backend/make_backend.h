// The backend for a --device name: "cpu", or "cuda" when built with PODKV_CUDA.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"

namespace podkv {

// `cuda_weights` is the device type of the weight matrices on CUDA ("bf16" or "f32"); the CPU ignores it.
// Throws Error for an unknown device, a build without CUDA, or no GPU.
std::unique_ptr<Backend> make_backend(const std::string& device, const Model& model,
                                      const std::string& cuda_weights = "bf16");
// The names make_backend takes, checked without a model (so that a command can refuse them before
// it loads one): throws Error for an unknown --device or --cuda-weights (on either device).
void check_device_options(const std::string& device, const std::string& cuda_weights);

}  // namespace podkv
