// SentencePiece tokenizer.model: podkv's own protobuf reader of its
// vocabulary; then the protobuf read by libsentencepiece and podkv's own byte
// and control-token tables, then encode and decode.
#include "fuzz_util.h"
#include "tokenizer/sentencepiece_model.h"
#include "tokenizer/sentencepiece_proto.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = podkv::fuzz::write_file("tokenizer.model", data, size);
  try {
    // podkv's own protobuf reader (GGUF export of tokenizer.model).
    const podkv::tok::SpmConfig v = podkv::tok::read_sentencepiece_vocab(path);
    if (v.tokens.empty() || v.scores.size() != v.tokens.size() || v.bos_id >= static_cast<int>(v.tokens.size()))
      __builtin_trap();
  } catch (const podkv::Error&) {
  }
  try {
    const auto tok = podkv::tok::load_sentencepiece_model(path);
    const std::vector<int32_t> ids = tok->encode("Hello, world! <s> 123 caf\xC3\xA9 \xF0\x9F\x98\x80\n", true);
    for (int32_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
    tok->decode(ids);
  } catch (const podkv::Error&) {
  }
  return 0;
}
