// Encoding any text and decoding any ids with real tokenizers: the reference
// model's byte-level BPE (tokenizer.json) and a SentencePiece BPE
// (tokenizer.model). The first byte picks the tokenizer and the direction.
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace {

const std::vector<std::unique_ptr<podkv::Tokenizer>>& tokenizers() {
  static const auto all = [] {
    std::vector<std::unique_ptr<podkv::Tokenizer>> t;
    const std::string fixtures = std::string(PODKV_SOURCE_DIR) + "/tests/fixtures/tokenizers/";
    t.push_back(podkv::load_tokenizer(fixtures + "bpe_llama3/tokenizer.json"));
#ifdef PODKV_HAVE_SENTENCEPIECE
    t.push_back(podkv::load_tokenizer(fixtures + "spm_bpe/tokenizer.model"));
#endif
    return t;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& all = tokenizers();
  const podkv::Tokenizer& tok = *all[data[0] % all.size()];
  const bool decode = (data[0] >> 4) & 1;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    if (!decode) {
      const std::vector<int32_t> ids = tok.encode(rest, (data[0] >> 5) & 1);
      for (int32_t id : ids)
        if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
    } else {
      // Two bytes per id, in range: decode() and the streaming decoder must take any sequence.
      std::vector<int32_t> ids;
      for (size_t i = 0; i + 1 < rest.size(); i += 2)
        ids.push_back((static_cast<uint8_t>(rest[i]) | static_cast<uint8_t>(rest[i + 1]) << 8) % tok.vocab_size());
      tok.decode(ids);
      podkv::StreamDecoder stream(tok, true);
      for (int32_t id : ids) stream.push(id);
      stream.flush();
    }
  } catch (const podkv::Error&) {
  }
  return 0;
}
