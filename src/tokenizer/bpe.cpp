#include "tokenizer/bpe.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <queue>

#include "tokenizer/fingerprint.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace podkv::tok {

int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = t[i];
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return -1;
    v = v * 16 + d;
  }
  return v;
}

static uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

bool BpeModel::add_merge(std::string_view a, std::string_view b, int32_t rank) {
  const int32_t ia = find(a), ib = find(b);
  std::string joined(a);
  joined += b;
  const int32_t im = find(joined);
  if (ia < 0 || ib < 0 || im < 0) return false;
  merges.emplace(pair_key(ia, ib), std::make_pair(rank, im));
  return true;
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges) {
    const int32_t whole = find(piece);
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }
  // Initial symbols: one per character (a lone invalid byte counts as one).
  struct Sym { int32_t id; int prev, next; bool alive; };
  std::vector<Sym> syms;
  syms.reserve(piece.size());
  bool last_unk = false;
  auto push = [&](int32_t id, bool unk) {
    if (unk && fuse_unk && last_unk) return;
    syms.push_back({id, static_cast<int>(syms.size()) - 1, static_cast<int>(syms.size()) + 1, true});
    last_unk = unk;
  };
  for (size_t i = 0; i < piece.size();) {
    size_t n = utf8_valid_len(piece, i);
    if (n == 0) n = 1;
    const std::string_view ch = piece.substr(i, n);
    i += n;
    const int32_t id = find(ch);
    if (id >= 0) {
      push(id, false);
      continue;
    }
    if (byte_fallback) {
      std::vector<int32_t> bytes;
      for (unsigned char c : ch) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", c);
        const int32_t b = find(name);
        if (b < 0) break;
        bytes.push_back(b);
      }
      if (bytes.size() == ch.size()) {
        for (int32_t b : bytes) push(b, false);
        continue;
      }
    }
    // Hugging Face drops a character it cannot represent when there is no unk.
    if (unk_id >= 0) push(unk_id, true);
  }
  if (syms.empty()) return;
  syms.back().next = -1;

  // Merge lowest rank first, leftmost first among equal ranks, as HF's
  // Word::merge_all does; stale queue entries are recognised and skipped.
  struct Cand { int32_t rank; int pos; int32_t new_id; };
  auto worse = [](const Cand& x, const Cand& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> queue(worse);
  auto lookup = [&](int left) -> const std::pair<int32_t, int32_t>* {
    const int right = syms[left].next;
    if (right < 0) return nullptr;
    auto it = merges.find(pair_key(syms[left].id, syms[right].id));
    return it == merges.end() ? nullptr : &it->second;
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i)
    if (auto m = lookup(i)) queue.push({m->first, i, m->second});
  while (!queue.empty()) {
    const Cand top = queue.top();
    queue.pop();
    Sym& left = syms[top.pos];
    if (!left.alive || left.next < 0) continue;
    auto m = lookup(top.pos);
    if (!m || m->second != top.new_id) continue;
    Sym& right = syms[left.next];
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    if (left.prev >= 0)
      if (auto p = lookup(left.prev)) queue.push({p->first, left.prev, p->second});
    if (auto n = lookup(top.pos)) queue.push({n->first, top.pos, n->second});
  }
  for (int i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

std::string normalize(const std::vector<NormalizeStep>& steps, std::string_view text) {
  std::string s(text);
  for (const auto& st : steps) {
    switch (st.kind) {
      case NormalizeStep::Kind::Replace: {
        if (st.pattern.empty()) break;
        std::string r;
        size_t i = 0;
        for (size_t f; (f = s.find(st.pattern, i)) != std::string::npos; i = f + st.pattern.size()) {
          r.append(s, i, f - i);
          r += st.content;
        }
        r.append(s, i, std::string::npos);
        s = std::move(r);
        break;
      }
      case NormalizeStep::Kind::Prepend:
        if (!s.empty()) s = st.content + s;  // HF prepends only to non-empty text
        break;
      case NormalizeStep::Kind::Strip: {
        size_t b = 0, e = s.size(), n = 0;
        if (st.left)
          while (whitespace_at(s, b, &n)) b += n;
        if (st.right)
          while (e > b && (n = whitespace_before(s, e)) > 0) e -= n;
        s = s.substr(b, e - b);
        break;
      }
      case NormalizeStep::Kind::Nfc:
        // Without a Unicode normalisation library NFC is the identity: exact
        // for text that is already NFC (nearly all real text), not for text
        // written with combining sequences that have precomposed forms.
        break;
    }
  }
  return s;
}

static std::string decode_token(const DecoderSpec& d, const std::string& token) {
  std::string s = token;
  if (d.byte_level) {
    std::string raw;
    // HF's ByteLevel decoder keeps a token verbatim when some character of it
    // is not a byte stand-in (e.g. an added token with a real space).
    if (byte_level_to_bytes(s, raw)) s = std::move(raw);
  }
  for (const auto& [from, to] : d.replacements) {
    std::string r;
    size_t i = 0;
    for (size_t f; !from.empty() && (f = s.find(from, i)) != std::string::npos; i = f + from.size()) {
      r.append(s, i, f - i);
      r += to;
    }
    r.append(s, i, std::string::npos);
    s = std::move(r);
  }
  if (d.byte_fallback) {
    const int b = parse_byte_token(s);
    if (b >= 0) s = std::string(1, static_cast<char>(b));
  }
  return s;
}

BpeTokenizer::BpeTokenizer(BpeConfig config) : cfg_(std::move(config)) {
  int32_t n = cfg_.vocab_size > 0 ? cfg_.vocab_size : static_cast<int32_t>(cfg_.model.id_to_token.size());
  for (const auto& a : cfg_.added) n = std::max(n, a.id + 1);
  std::vector<std::string> text(n);
  for (size_t i = 0; i < cfg_.model.id_to_token.size(); ++i) text[i] = cfg_.model.id_to_token[i];
  for (const auto& a : cfg_.added) text[a.id] = a.content;
  bytes_.resize(n);
  for (int32_t i = 0; i < n; ++i) bytes_[i] = decode_token(cfg_.decoder, text[i]);
  texts_ = std::move(text);
  if (cfg_.added_verbatim)
    for (const auto& a : cfg_.added) bytes_[a.id] = a.content;
  bos_id_ = cfg_.bos_id;
  eos_ids_ = cfg_.eos_ids;
  matcher_ = AddedTokenMatcher(cfg_.added);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos) ids = cfg_.bos_prefix;
  for (const Segment& seg : matcher_.split(text)) {
    if (seg.token >= 0) {
      ids.push_back(seg.token);
      continue;
    }
    const std::string norm = normalize(cfg_.normalizer, seg.text);
    for (const std::string& piece : pre_tokenize(cfg_.pre, norm, seg.offset == 0))
      cfg_.model.encode_piece(piece, ids);
  }
  if (add_bos) ids.insert(ids.end(), cfg_.eos_suffix.begin(), cfg_.eos_suffix.end());
  return ids;
}

std::string BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error("token id " + std::to_string(id) + " out of range (vocabulary size " +
                std::to_string(vocab_size()) + ")");
  return bytes_[id];
}

void BpeTokenizer::hash_rules(Fnv1a64& hash) const {
  const BpeModel& m = cfg_.model;
  hash.string("bpe");
  hash.u64(m.ignore_merges);
  hash.u64(m.byte_fallback);
  // Ranks are positions in the file's merge list, which may hold entries that
  // can never apply (skipped when loading): the order is hashed, not the ranks.
  std::vector<std::pair<int32_t, uint64_t>> by_rank;  // rank, index into triples
  std::vector<std::array<int32_t, 3>> triples;        // left, right, merged
  by_rank.reserve(m.merges.size());
  triples.reserve(m.merges.size());
  for (const auto& [pair, merge] : m.merges) {
    by_rank.emplace_back(merge.first, triples.size());
    triples.push_back({static_cast<int32_t>(pair >> 32), static_cast<int32_t>(pair & 0xffffffffu), merge.second});
  }
  std::sort(by_rank.begin(), by_rank.end());
  hash.u64(by_rank.size());
  for (const auto& [rank, index] : by_rank)
    for (const int32_t id : triples[index]) hash.u64(static_cast<uint32_t>(id));
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) s += token_bytes(id);
  const std::string& ms = cfg_.decoder.metaspace_first;
  if (!ids.empty() && !ms.empty() && !(cfg_.added_verbatim && texts_[ids[0]] != bytes_[ids[0]])) {
    std::string first = texts_[ids[0]], stripped;
    for (size_t i = 0; i < first.size();) {
      if (first.compare(i, ms.size(), ms) == 0) {
        i += ms.size();
      } else {
        stripped += first[i++];
      }
    }
    s = decode_token(cfg_.decoder, stripped) + s.substr(bytes_[ids[0]].size());
  }
  size_t k = 0;
  while (k < static_cast<size_t>(cfg_.decoder.strip_leading) && k < s.size() && s[k] == ' ') ++k;
  return utf8_lossy(std::string_view(s).substr(k));
}

}  // namespace podkv::tok
