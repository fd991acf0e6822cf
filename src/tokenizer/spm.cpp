#include "tokenizer/spm.h"

#include <bit>
#include <cstdio>
#include <queue>

#include "tokenizer/bpe.h"
#include "tokenizer/fingerprint.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace podkv::tok {

static const char kSpace[] = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

SpmTokenizer::SpmTokenizer(SpmConfig config) : cfg_(std::move(config)) {
  const size_t n = cfg_.tokens.size();
  cfg_.scores.resize(n, 0.0f);
  cfg_.types.resize(n, kTokenNormal);
  for (int& b : byte_ids_) b = -1;
  std::vector<AddedToken> specials;
  bytes_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = cfg_.tokens[i];
    const int32_t type = cfg_.types[i];
    const int32_t id = static_cast<int32_t>(i);
    // Only pieces that plain text can turn into take part in merging:
    // control, byte, unknown and unused tokens never come out of text.
    if (type == kTokenNormal || type == kTokenUndefined || type == kTokenUserDefined)
      mergeable_.emplace(t, id);
    if (type == kTokenControl || type == kTokenUserDefined) specials.push_back({t, id, false, false, false, true});
    int b = -1;
    if (type == kTokenByte && (b = parse_byte_token(t)) >= 0) {
      if (byte_ids_[b] < 0) byte_ids_[b] = id;
      bytes_[i] = std::string(1, static_cast<char>(b));
    } else if (type == kTokenNormal || type == kTokenUndefined || type == kTokenUserDefined) {
      std::string s;
      for (size_t p = 0; p < t.size();) {
        if (t.compare(p, 3, kSpace) == 0) {
          s += ' ';
          p += 3;
        } else {
          s += t[p++];
        }
      }
      bytes_[i] = std::move(s);
    } else {
      bytes_[i] = t;  // control / unknown tokens read as their text
    }
  }
  matcher_ = AddedTokenMatcher(std::move(specials));
  bos_id_ = cfg_.bos_id;
  eos_ids_ = cfg_.eos_ids;
}

void SpmTokenizer::encode_text(const std::string& text, std::vector<int32_t>& out) const {
  // Symbols are characters (llama.cpp splits by the lead byte's length).
  struct Sym { size_t start, n; int prev, next; };
  std::vector<Sym> syms;
  for (size_t offs = 0; offs < text.size();) {
    const size_t len = std::min(utf8_len_from_lead(static_cast<uint8_t>(text[offs])), text.size() - offs);
    syms.push_back({offs, len, static_cast<int>(syms.size()) - 1, static_cast<int>(syms.size()) + 1});
    offs += len;
  }
  if (syms.empty()) return;
  syms.back().next = -1;

  struct Bigram { int left, right; float score; size_t size; };
  // Highest score first; among equal scores the leftmost pair.
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const std::string_view s(text.data() + syms[left].start, syms[left].n + syms[right].n);
    auto it = mergeable_.find(s);
    if (it == mergeable_.end()) return;
    queue.push({left, right, cfg_.scores[it->second], s.size()});
  };
  for (size_t i = 1; i < syms.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!queue.empty()) {
    const Bigram bg = queue.top();
    queue.pop();
    Sym& l = syms[bg.left];
    Sym& r = syms[bg.right];
    // Skip pairs whose symbols changed since the pair was queued.
    if (l.n == 0 || r.n == 0 || l.n + r.n != bg.size || l.next != bg.right) continue;
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = bg.left;
    try_add(l.prev, bg.left);
    try_add(bg.left, l.next);
  }
  for (int i = 0; i >= 0; i = syms[i].next) {
    const std::string_view s = std::string_view(text).substr(syms[i].start, syms[i].n);
    auto it = mergeable_.find(s);
    if (it != mergeable_.end()) {
      out.push_back(it->second);
      continue;
    }
    // Every merged symbol is a vocabulary piece, so only single characters
    // get here: write them as bytes.
    for (unsigned char c : s) {
      const int32_t b = byte_ids_[c];
      if (b >= 0) out.push_back(b);
      else if (cfg_.unk_id >= 0) out.push_back(cfg_.unk_id);
    }
  }
}

std::vector<int32_t> SpmTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos && cfg_.add_bos && cfg_.bos_id >= 0) ids.push_back(cfg_.bos_id);
  // As llama.cpp (and SentencePiece's legacy behaviour): the text at the start
  // and the text right after a special token get the space prefix.
  bool prev_special = true;
  for (const Segment& seg : matcher_.split(text)) {
    if (seg.token >= 0) {
      ids.push_back(seg.token);
      prev_special = true;
      continue;
    }
    std::string s;
    s.reserve(seg.text.size() * 3 + 3);
    if (cfg_.add_space_prefix && prev_special) s += kSpace;
    for (char c : seg.text) {
      if (c == ' ') s += kSpace;
      else s += c;
    }
    encode_text(s, ids);
    prev_special = false;
  }
  if (add_bos && cfg_.add_eos && cfg_.eos_id >= 0) ids.push_back(cfg_.eos_id);
  return ids;
}

std::string SpmTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error("token id " + std::to_string(id) + " out of range (vocabulary size " +
                std::to_string(vocab_size()) + ")");
  return bytes_[id];
}

void SpmTokenizer::hash_rules(Fnv1a64& hash) const {
  hash.string("scores");
  for (size_t id = 0; id < cfg_.tokens.size(); ++id)
    hash.u64(std::bit_cast<uint32_t>(id < cfg_.scores.size() ? cfg_.scores[id] : 0.0f));
}

std::string SpmTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) s += token_bytes(id);
  // The space prefix added when encoding is not part of the text.
  if (cfg_.add_space_prefix && !s.empty() && s[0] == ' ') s.erase(0, 1);
  return utf8_lossy(s);
}

}  // namespace podkv::tok
