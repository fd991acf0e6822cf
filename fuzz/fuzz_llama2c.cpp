// llama2.c checkpoints (legacy and "ak42" version 1 headers) converted to a
// model directory, and the same bytes read as a llama2.c tokenizer.bin.
#include "convert/llama2c.h"
#include "fuzz_util.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = podkv::fuzz::write_file("model.bin", data, size);
  try {
    podkv::convert_llama2c(path, "", podkv::fuzz::scratch_dir() + "/out");
  } catch (const podkv::Error&) {
  }
  try {
    const podkv::tok::SpmConfig v = podkv::read_llama2c_tokenizer(path, 4);
    if (v.tokens.size() != 4 || v.scores.size() != 4 || v.types.size() != 4) __builtin_trap();
  } catch (const podkv::Error&) {
  }
  return 0;
}
