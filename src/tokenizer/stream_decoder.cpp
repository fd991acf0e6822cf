// Tokenizer's shared methods and the streaming decoder.
#include <algorithm>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace podkv {

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) s += token_bytes(id);
  return tok::utf8_lossy(s);
}

bool Tokenizer::is_eos(int32_t id) const {
  return std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end();
}

std::string StreamDecoder::push(int32_t id) {
  std::string bytes = tokenizer_.token_bytes(id);
  if (first_) {
    first_ = false;
    // Some decoders treat the first token specially (SentencePiece drops its
    // space prefix); taking decode() of it alone gives the same text as
    // decode() of the whole sequence. A token that is not whole UTF-8 by
    // itself has no such prefix and must stay raw so it can be completed.
    if (tok::is_valid_utf8(bytes)) bytes = tokenizer_.decode({id});
  }
  pending_ += bytes;
  const size_t n = tok::utf8_complete_prefix(pending_);
  std::string out = tok::utf8_lossy(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = tok::utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace podkv
