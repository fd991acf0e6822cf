// UTF-8 helpers shared by the tokenizers: code point iteration, validation,
// lossy repair, and GPT-2's byte <-> printable-character mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace podkv::tok {

// Hash for unordered maps keyed by std::string that can be searched with a
// string_view without building a string (C++20 heterogeneous lookup).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Length of the sequence a lead byte announces, the way llama.cpp splits text
// into symbols: continuation and invalid lead bytes count as 1.
inline size_t utf8_len_from_lead(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Appends the UTF-8 encoding of code point `cp` to `out`.
void append_utf8(std::string& out, uint32_t cp);

// Length of the valid UTF-8 sequence starting at s[pos] (1..4), or 0 when the
// bytes there are invalid; `incomplete` is set when they are a valid but
// truncated prefix of a sequence (more bytes could complete it).
size_t utf8_valid_len(std::string_view s, size_t pos, bool* incomplete = nullptr);

// Decodes the code point at s[pos] (valid sequence of `len` bytes).
uint32_t utf8_decode(std::string_view s, size_t pos, size_t len);

bool is_valid_utf8(std::string_view s);

// Replaces each maximal invalid subpart with U+FFFD, as Rust's
// String::from_utf8_lossy (and so Hugging Face decode) does.
std::string utf8_lossy(std::string_view s);

// Longest prefix of `s` that ends on a sequence boundary, leaving out only a
// trailing valid-but-incomplete sequence (invalid bytes are not held back:
// they can never become valid).
size_t utf8_complete_prefix(std::string_view s);

// GPT-2 byte-level mapping: every byte has a printable stand-in character
// (bytes that are printable Latin-1 stand for themselves, the rest map to
// U+0100 + n). Byte-level BPE vocabularies are written in these characters.
const std::string& byte_to_unicode(uint8_t b);
// The byte a stand-in code point represents, or -1 when it is not one.
int unicode_to_byte(uint32_t cp);
// All bytes of `s` mapped to their stand-in characters.
std::string bytes_to_byte_level(std::string_view s);
// Inverse of bytes_to_byte_level; returns false (leaving `out` unspecified)
// when some character of `s` is not a stand-in.
bool byte_level_to_bytes(std::string_view s, std::string& out);

}  // namespace podkv::tok
