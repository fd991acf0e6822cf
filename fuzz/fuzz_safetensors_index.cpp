// model.safetensors.index.json of a sharded checkpoint: the weight_map, shard
// names (never a path out of the directory), tensors absent from their shard.
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "util/error.h"

namespace {

// Two real shards beside the fuzzed index: tensors "a" and "b".
void write_shards() {
  static bool done = false;
  if (done) return;
  podkv::fuzz::write_file("model.safetensors.index.json", std::string("{}"));
  const float values[2] = {1.0f, 2.0f};
  podkv::safetensors::write_file(podkv::fuzz::scratch_dir() + "/model-00001-of-00002.safetensors",
                                 {{"a", podkv::DType::F32, {2}, values, sizeof(values)}});
  podkv::safetensors::write_file(podkv::fuzz::scratch_dir() + "/model-00002-of-00002.safetensors",
                                 {{"b", podkv::DType::F32, {1, 1}, values, sizeof(float)}});
  done = true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_shards();
  podkv::fuzz::write_file("model.safetensors.index.json", data, size);
  try {
    const auto checkpoint = podkv::safetensors::Checkpoint::open_directory(podkv::fuzz::scratch_dir());
    for (const std::string& name : checkpoint.names())
      if (checkpoint.find(name) == nullptr) __builtin_trap();
  } catch (const podkv::Error&) {
  }
  return 0;
}
