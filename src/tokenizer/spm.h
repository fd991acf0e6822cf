// SentencePiece-style BPE over a vocabulary with scores, as llama.cpp runs the
// GGUF "llama" vocabularies: spaces escaped to U+2581, a leading space added,
// adjacent pieces merged by the highest score of the merged piece, and bytes
// left over written as <0xXX> byte tokens.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace podkv::tok {

// GGUF token types (tokenizer.ggml.token_type).
enum TokenType : int32_t {
  kTokenUndefined = 0, kTokenNormal = 1, kTokenUnknown = 2, kTokenControl = 3,
  kTokenUserDefined = 4, kTokenUnused = 5, kTokenByte = 6,
};

struct SpmConfig {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  bool add_space_prefix = true;
  bool add_bos = true;
  bool add_eos = false;
  int32_t bos_id = -1, eos_id = -1, unk_id = -1;
  std::vector<int32_t> eos_ids;  // every end-of-generation token
};

class SpmTokenizer : public Tokenizer {
 public:
  explicit SpmTokenizer(SpmConfig config);
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  std::string token_bytes(int32_t id) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(cfg_.tokens.size()); }
  void hash_rules(Fnv1a64& hash) const override;

 private:
  void encode_text(const std::string& text, std::vector<int32_t>& out) const;

  SpmConfig cfg_;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> mergeable_;  // pieces that text may merge into
  int32_t byte_ids_[256];
  AddedTokenMatcher matcher_;
  std::vector<std::string> bytes_;
};

}  // namespace podkv::tok
