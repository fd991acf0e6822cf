// Merge-rank BPE (Hugging Face's BPE model, llama.cpp's "gpt2" vocabularies)
// and the tokenizer built around it: added tokens, normalizer,
// pre-tokenizer, model, post-processor template and decoder.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/utf8.h"
#include "tokenizer/tokenizer.h"

namespace podkv::tok {

struct BpeModel {
  std::vector<std::string> id_to_token;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_to_id;
  // (left id << 32 | right id) -> (rank, merged id).
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  bool ignore_merges = false;  // a piece that is itself a token is taken whole (Llama 3)
  bool byte_fallback = false;  // unknown characters become <0xXX> tokens
  bool fuse_unk = false;       // consecutive unknowns become one unk
  int32_t unk_id = -1;

  int32_t find(std::string_view token) const {
    auto it = token_to_id.find(token);
    return it == token_to_id.end() ? -1 : it->second;
  }
  // Adds merge number `rank` of tokens `a` and `b`; returns false when a, b
  // or their concatenation is not in the vocabulary. The first merge of a
  // pair wins.
  bool add_merge(std::string_view a, std::string_view b, int32_t rank);
  // Appends the ids of one pre-tokenized piece.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
};

// Text normalisation steps of tokenizer.json that podkv implements.
struct NormalizeStep {
  enum class Kind { Replace, Prepend, Strip, Nfc };
  Kind kind = Kind::Replace;
  std::string pattern;  // Replace: literal to find
  std::string content;  // Replace: replacement; Prepend: prefix
  bool left = false, right = false;  // Strip
};
std::string normalize(const std::vector<NormalizeStep>& steps, std::string_view text);

// How ids turn back into bytes: Hugging Face decoders, applied per token in
// order (byte-level mapping, replacements, <0xXX> byte fallback), then up to
// `strip_leading` leading spaces removed from the whole text.
struct DecoderSpec {
  bool byte_level = false;
  std::vector<std::pair<std::string, std::string>> replacements;
  bool byte_fallback = false;
  int strip_leading = 0;
  // HF's Metaspace decoder drops every `metaspace_first` character of the
  // first token (not just a leading one) when it prepends.
  std::string metaspace_first;
};

struct BpeConfig {
  BpeModel model;
  std::vector<AddedToken> added;
  std::vector<NormalizeStep> normalizer;
  std::vector<PreTokenizeStep> pre;
  std::vector<int32_t> bos_prefix;  // post-processor single template, before the text
  std::vector<int32_t> eos_suffix;  // ... and after it
  DecoderSpec decoder;
  // Added tokens decode to their text as written, skipping the decoder
  // (llama.cpp's rule for control / user-defined tokens; Hugging Face instead
  // runs them through the decoder like any token).
  bool added_verbatim = false;
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;
  int32_t vocab_size = 0;  // max(model ids, added ids) + 1 when 0
};

class BpeTokenizer : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeConfig config);
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  std::string token_bytes(int32_t id) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(bytes_.size()); }
  void hash_rules(Fnv1a64& hash) const override;

 private:
  BpeConfig cfg_;
  AddedTokenMatcher matcher_;
  std::vector<std::string> texts_;  // token strings as in the vocabulary
  std::vector<std::string> bytes_;  // token_bytes of every id, computed once
};

// The bytes a <0xXX> token stands for, or -1 when `token` is not one.
int parse_byte_token(std::string_view token);

}  // namespace podkv::tok
