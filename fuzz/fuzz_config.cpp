// config.json: every field's type and range, and the products derived from them.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "model/config.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = podkv::fuzz::write_file("config.json", data, size);
  try {
    const podkv::ModelConfig c = podkv::load_hf_config(path);
    // An accepted config must give sane derived sizes.
    if (c.q_dim() <= 0 || c.kv_dim() <= 0 || c.parameter_count() <= 0 || c.dense_kv_bytes_per_token() <= 0)
      __builtin_trap();
    if (c.head_dim <= 4096) podkv::rope_inverse_frequencies(c);
    podkv::config_to_hf_json(c);
  } catch (const podkv::Error&) {
  }
  return 0;
}
