#include "tokenizer/added_tokens.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace podkv::tok {

static bool is_white_space_cp(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

bool whitespace_at(std::string_view text, size_t pos, size_t* len) {
  *len = 0;
  if (pos >= text.size()) return false;
  const size_t n = utf8_valid_len(text, pos);
  if (n == 0 || !is_white_space_cp(utf8_decode(text, pos, n))) return false;
  *len = n;
  return true;
}

size_t whitespace_before(std::string_view text, size_t end) {
  // Walk back over continuation bytes to the start of the last character.
  size_t start = end;
  for (int k = 0; k < 4 && start > 0; ++k) {
    --start;
    if ((static_cast<uint8_t>(text[start]) & 0xC0) != 0x80) break;
  }
  size_t len = 0;
  if (start < end && whitespace_at(text, start, &len) && start + len == end) return len;
  return 0;
}

// Word characters for single_word: what HF treats as part of a word
// (alphanumeric or '_'); non-ASCII letters count as word characters too.
static bool is_word_byte_at(std::string_view text, size_t pos) {
  const auto c = static_cast<uint8_t>(text[pos]);
  if (c >= 0x80) {
    size_t len = 0;
    return !whitespace_at(text, pos, &len);
  }
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  by_first_byte_.resize(256);
  for (uint32_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].content.empty()) continue;  // an empty token can never be written
    by_first_byte_[static_cast<uint8_t>(tokens_[i].content[0])].push_back(i);
  }
  for (auto& v : by_first_byte_)
    std::stable_sort(v.begin(), v.end(),
                     [&](uint32_t a, uint32_t b) { return tokens_[a].content.size() > tokens_[b].content.size(); });
}

std::vector<Segment> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<Segment> out;
  if (tokens_.empty()) {
    if (!text.empty()) out.push_back({text, 0, -1});
    return out;
  }
  size_t plain_start = 0;  // start of the pending plain text
  size_t pos = 0;
  while (pos < text.size()) {
    const auto& cands = by_first_byte_[static_cast<uint8_t>(text[pos])];
    const AddedToken* hit = nullptr;
    for (uint32_t idx : cands) {
      const auto& t = tokens_[idx];
      if (text.compare(pos, t.content.size(), t.content) != 0) continue;
      if (t.single_word) {
        const size_t end = pos + t.content.size();
        if ((pos > 0 && is_word_byte_at(text, pos - 1)) || (end < text.size() && is_word_byte_at(text, end)))
          continue;
      }
      hit = &t;
      break;
    }
    if (!hit) {
      ++pos;
      continue;
    }
    size_t start = pos, end = pos + hit->content.size();
    if (hit->lstrip) {
      while (start > plain_start) {
        const size_t n = whitespace_before(text, start);
        if (n == 0 || start - n < plain_start) break;
        start -= n;
      }
    }
    if (hit->rstrip) {
      size_t n = 0;
      while (whitespace_at(text, end, &n)) end += n;
    }
    if (start > plain_start) out.push_back({text.substr(plain_start, start - plain_start), plain_start, -1});
    out.push_back({text.substr(start, end - start), start, hit->id});
    plain_start = pos = end;
  }
  if (plain_start < text.size()) out.push_back({text.substr(plain_start), plain_start, -1});
  return out;
}

}  // namespace podkv::tok
