// Creating a model with random weights in the Hugging Face layout, for tests,
// benchmarks and the built-in default model of the quick start.
#pragma once

#include <cstdint>
#include <string>

#include "model/config.h"
#include "util/dtype.h"

namespace podkv {

// Named shapes: "tiny" (~0.3M parameters), "small" (~5M), "100m" (~100M, the
// bandwidth benchmark's model), "1b" (~1B with a 32K vocabulary: Llama 3.2 1B's body, for decode
// benchmarks whose weights do not fit a server's L3). Throws Error listing the names for an unknown one.
ModelConfig preset_config(const std::string& name, int vocab_size);

// Writes DIR/config.json and DIR/model.safetensors with weights drawn from
// N(0, std²) (norm weights 1), deterministic given `seed`, stored as `dtype`
// (F32, F16 or BF16). Creates DIR; writes through temporary names.
void create_random_model(const ModelConfig& config, DType dtype, uint64_t seed, double std, const std::string& dir);

}  // namespace podkv
