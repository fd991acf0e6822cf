// tokenizer.json: model (BPE vocab and merges), added tokens, normalizer,
// pre-tokenizer (regexes), post-processor and decoder; then encode and decode.
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_json.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = podkv::fuzz::write_file("tokenizer.json", data, size);
  try {
    const auto tok = podkv::tok::load_tokenizer_json(path);
    const std::vector<int32_t> ids = tok->encode("Hello, world! 123 <|begin_of_text|> caf\xC3\xA9 \xF0\x9F\x98\x80\n", true);
    for (int32_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
    tok->decode(ids);
    std::vector<int32_t> all;
    for (int32_t id = 0; id < std::min<int32_t>(tok->vocab_size(), 512); ++id) all.push_back(id);
    tok->decode(all);
  } catch (const podkv::Error&) {
  }
  return 0;
}
