// A 64-bit fingerprint of a tokenizer as podkv loads it, so that files of
// token ids (podkv tokenize-data) can say which tokenizer made them. It hashes
// what the tokenizer does, not the file it came from: the same tokenizer read
// from tokenizer.json, tokenizer.model or GGUF metadata gives the same value.
#pragma once

#include <cstdint>
#include <string_view>

namespace podkv {

class Tokenizer;

// 64-bit FNV-1a.
class Fnv1a64 {
 public:
  void bytes(std::string_view data) {
    for (const char c : data) hash_ = (hash_ ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  }
  // Eight little-endian bytes, whatever the host's byte order.
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) hash_ = (hash_ ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ull;
  }
  void string(std::string_view s) {  // length first, so "ab","c" and "a","bc" differ
    u64(s.size());
    bytes(s);
  }
  uint64_t value() const { return hash_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ull;
};

// FNV-1a over, in order: the vocabulary size, BOS, the EOS ids, the bytes of
// every token (token_bytes, by id), the segmentation rules (Tokenizer::
// hash_rules: BPE merges in rank order, or piece scores), and the ids encode()
// gives (no BOS) for a fixed probe text (prose, code, digits, runs of spaces,
// accents, CJK, emoji) that catches other normalisation or pre-tokenisation.
// The same tokenizer read from tokenizer.json and from the GGUF podkv convert
// writes, or from tokenizer.model and its GGUF, gives the same value; a
// SentencePiece tokenizer as a BPE tokenizer.json (merges) and as a GGUF
// "llama" vocabulary (scores) does not.
uint64_t tokenizer_fingerprint(const Tokenizer& tokenizer);

}  // namespace podkv
