// Token files (train/adapt --data, podkv tokenize-data): the reader either
// gives the header's count of ids, each below the file's vocabulary, or
// throws Error and appends nothing; checked against a tokenizer, it gives the
// same ids or the tokenizer error.
#include "fuzz_util.h"
#include "train/token_file.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace podkv::train;
  const std::string path = podkv::fuzz::write_file("corpus.tokens", data, size);
  std::vector<int32_t> ids;
  TokenFileHeader header;
  try {
    header = read_token_file(path, ids);
  } catch (const podkv::Error&) {
    if (!ids.empty()) __builtin_trap();
    return 0;
  }
  if (ids.size() != header.tokens || ids.empty()) __builtin_trap();
  for (const int32_t id : ids)
    if (id < 0 || static_cast<uint32_t>(id) >= header.vocab_size) __builtin_trap();
  // The reference model's vocabulary (1007) and this file's fingerprint.
  const TokenizerIdentity expected{1007, header.fingerprint};
  std::vector<int32_t> again;
  try {
    read_token_file(path, again, &expected);
    if (header.vocab_size != 1007 || again != ids) __builtin_trap();
  } catch (const podkv::Error&) {
    if (header.vocab_size == 1007 || !again.empty()) __builtin_trap();
  }
  return 0;
}
