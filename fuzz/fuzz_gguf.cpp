// GGUF: header, metadata of every type, tensor infos and offsets, and the
// embedded vocabulary (tokenizer.ggml.*) with a round trip through it.
#include "fuzz_util.h"
#include "io/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = podkv::fuzz::write_file("model.gguf", data, size);
  try {
    const auto file = podkv::gguf::File::open(path);
    for (const auto& t : file.tensors()) {
      if (t.nbytes > 0) {
        volatile uint8_t first = t.data[0], last = t.data[t.nbytes - 1];
        (void)first, (void)last;
      }
    }
    if (file.find("tokenizer.ggml.model") != nullptr) {
      const auto tok = podkv::load_gguf_tokenizer(file);
      const std::vector<int32_t> ids = tok->encode("Hello, world! <s> 123 \xE2\x96\x81x\n\t", true);
      for (int32_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
      tok->decode(ids);
    }
  } catch (const podkv::Error&) {
  }
  return 0;
}
