// Recognising special / added tokens written in raw text before any other
// processing, as Hugging Face's AddedVocabulary and llama.cpp's special-token
// partition do: leftmost-longest matching, with optional whitespace stripping.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace podkv::tok {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool lstrip = false;       // swallow whitespace to the left of the match
  bool rstrip = false;       // swallow whitespace to the right of the match
  bool single_word = false;  // only match when not inside a word
  bool special = false;
};

// A stretch of the input: either plain text (token == -1) or one added token.
struct Segment {
  std::string_view text;
  size_t offset = 0;  // byte offset of `text` in the input
  int32_t token = -1;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  const std::vector<AddedToken>& tokens() const { return tokens_; }

  // Splits `text` into plain-text and added-token segments, in order; plain
  // segments are never empty.
  std::vector<Segment> split(std::string_view text) const;

 private:
  std::vector<AddedToken> tokens_;
  // Token indices by first byte, longest content first, so the first hit at a
  // position is the longest one.
  std::vector<std::vector<uint32_t>> by_first_byte_;
};

// Unicode White_Space (what Rust's char::is_whitespace tests) of the code
// point at text[pos]; `len` receives its byte length (0 when not whitespace).
bool whitespace_at(std::string_view text, size_t pos, size_t* len);
// Length of the whitespace character that ends at text[end) (0 when none).
size_t whitespace_before(std::string_view text, size_t end);

}  // namespace podkv::tok
