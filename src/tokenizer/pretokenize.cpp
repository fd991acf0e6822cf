#include "tokenizer/pretokenize.h"

#include <map>
#include <mutex>

#include "tokenizer/utf8.h"
#include "util/error.h"

#ifdef PODKV_HAVE_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#endif

namespace podkv::tok {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// DeepSeek LLM's pre-tokenizer as llama.cpp lists it. Non-ASCII characters are
// written as \x{...} escapes: several of them (U+1F7D, U+1FBE, U+1FD3, U+1FDB,
// U+2126, U+212A) have canonical singleton decompositions, and an editor or
// tool that normalises the source would silently turn the ranges into
// different (or invalid) ones.
static const char* const kDeepseekLlmPatterns[] = {
    R"([\r\n])",
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF})"
    R"(\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1})"
    R"(\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5})"
    R"(\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A})"
    R"(\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B})"
    R"(\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC})"
    R"(\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107})"
    R"(\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134})"
    R"(\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4})"
    R"(\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787})"
    R"(\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A})"
    R"(\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2})"
    R"(\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)",
    R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)",
    R"(\s+$)",
    R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)",
    R"(\p{N}+)",
};

// The other lists of llama.cpp's BPE tokenizer (llama-vocab.cpp), applied in order.
static const char* const kDeepseekCoderPatterns[] = {
    R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)", R"(\p{N})"};
// StarCoder, Refact: every digit its own piece, then GPT-2's split.
static const char* const kStarcoderPatterns[] = {R"(\p{N})", kGpt2Pattern};
// Falcon: runs of punctuation (and $+<=>^~|`) first, then GPT-2's split, then
// digits in threes.
static const char* const kFalconPatterns[] = {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2Pattern, R"([0-9][0-9][0-9])"};
// Qwen2 as its tokenizer.json writes it: Llama 3's pattern with single digits.
const char* const kQwen2JsonPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2 as llama.cpp writes it: the same, its case-insensitive contractions spelled out.
const char* const kQwen2Pattern =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::vector<std::string> gguf_pre_patterns(const std::string& pre) {
  if (pre == "default" || pre == "gpt-2" || pre == "gpt2" || pre == "mpt" || pre == "olmo") return {kGpt2Pattern};
  if (pre == "llama-bpe" || pre == "llama3" || pre == "dbrx" || pre == "smaug-bpe") return {kLlama3Pattern};
  if (pre == "deepseek-llm") return {std::begin(kDeepseekLlmPatterns), std::end(kDeepseekLlmPatterns)};
  if (pre == "deepseek-coder") return {std::begin(kDeepseekCoderPatterns), std::end(kDeepseekCoderPatterns)};
  if (pre == "starcoder" || pre == "refact" || pre == "smollm")
    return {std::begin(kStarcoderPatterns), std::end(kStarcoderPatterns)};
  if (pre == "falcon") return {std::begin(kFalconPatterns), std::end(kFalconPatterns)};
  if (pre == "qwen2") return {kQwen2Pattern};
  throw Error("tokenizer.ggml.pre: unsupported pre-tokenizer \"" + pre +
              "\" (supported: default, gpt2, mpt, olmo, llama-bpe, llama3, dbrx, smaug-bpe, deepseek-llm, "
              "deepseek-coder, starcoder, refact, smollm, falcon, qwen2)");
}

std::string regex_escape(std::string_view literal) {
  // \Q...\E quotes everything except a literal "\E", which is spliced out.
  std::string out = "\\Q";
  for (size_t i = 0; i < literal.size(); ++i) {
    if (literal[i] == '\\' && i + 1 < literal.size() && literal[i + 1] == 'E') {
      out += "\\E\\\\E\\Q";
      ++i;
    } else {
      out += literal[i];
    }
  }
  return out + "\\E";
}

#ifdef PODKV_HAVE_PCRE2

std::shared_ptr<const Regex> Regex::get(const std::string& pattern, const std::string& where) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const Regex>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(pattern);
  if (it != cache.end()) return it->second;

  int err = 0;
  PCRE2_SIZE err_offset = 0;
  // MULTILINE: Hugging Face tokenizers run their patterns through Oniguruma's
  // Ruby syntax, where ^ and $ match at line boundaries. MATCH_INVALID_UTF:
  // encode() accepts arbitrary bytes; invalid ones never match and fall into
  // the gaps, where byte-level BPE still encodes them.
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_MATCH_INVALID_UTF,
                                   &err, &err_offset, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw Error(where + ": regex does not compile at offset " + std::to_string(err_offset) + ": " +
                reinterpret_cast<const char*>(msg));
  }
  // JIT makes matching several times faster; where it is unavailable the
  // interpreter gives the same results, so a failure here is not an error.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  std::shared_ptr<Regex> r(new Regex());
  r->code_ = code;
  r->pattern_ = pattern;
  cache.emplace(pattern, r);
  return r;
}

Regex::~Regex() {
  if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  auto* code = static_cast<pcre2_code*>(code_);
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  if (!md) throw Error("regex: out of memory for match data");
  size_t pos = 0;
  while (pos <= text.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, 0, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw Error("regex /" + pattern_ + "/: match failed: " + reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(b, e);
      pos = e;
    } else {
      // Empty match: it yields no piece; step over one character (or one
      // invalid byte) so the search moves on.
      if (b >= text.size()) break;
      const size_t n = utf8_valid_len(text, b);
      pos = b + (n ? n : 1);
    }
  }
  pcre2_match_data_free(md);
  return out;
}

#else

std::shared_ptr<const Regex> Regex::get(const std::string& pattern, const std::string& where) {
  throw Error(where + ": regex pre-tokenization needs PCRE2, and podkv was built without PCRE2");
}
Regex::~Regex() = default;
std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view) const { return {}; }

#endif

void split_pieces(const Regex& regex, SplitBehavior behavior, bool invert, std::string_view text,
                  std::vector<std::string>& out) {
  // Cover the text with alternating (range, matched) parts, as HF's Pattern does.
  struct Part { size_t b, e; bool match; };
  std::vector<Part> parts;
  size_t prev = 0;
  for (auto [b, e] : regex.find_all(text)) {
    if (b > prev) parts.push_back({prev, b, false});
    parts.push_back({b, e, true});
    prev = e;
  }
  if (prev < text.size()) parts.push_back({prev, text.size(), false});
  if (invert)
    for (auto& p : parts) p.match = !p.match;

  std::vector<std::string> pieces;
  bool pending_next = false;  // MergedWithNext: last piece waits for the next one
  bool prev_match = false;
  for (const auto& p : parts) {
    std::string_view s = text.substr(p.b, p.e - p.b);
    switch (behavior) {
      case SplitBehavior::Removed:
        if (!p.match) pieces.emplace_back(s);
        break;
      case SplitBehavior::Isolated:
        pieces.emplace_back(s);
        break;
      case SplitBehavior::MergedWithPrevious:
        if (p.match && !pieces.empty() && !prev_match) pieces.back() += s;
        else pieces.emplace_back(s);
        break;
      case SplitBehavior::MergedWithNext:
        // A match joins the part after it unless that part is a match too.
        if (pending_next && !p.match) pieces.back() += s;
        else pieces.emplace_back(s);
        pending_next = p.match;
        break;
      case SplitBehavior::Contiguous:
        if (p.match && prev_match && !pieces.empty()) pieces.back() += s;
        else pieces.emplace_back(s);
        break;
    }
    prev_match = p.match;
  }
  for (auto& s : pieces)
    if (!s.empty()) out.push_back(std::move(s));
}

static void metaspace(const PreTokenizeStep& step, const std::string& piece, bool first_piece,
                      std::vector<std::string>& out) {
  std::string s;
  s.reserve(piece.size() + step.replacement.size());
  for (char c : piece) {
    if (c == ' ') s += step.replacement;
    else s += c;
  }
  const bool starts = s.compare(0, step.replacement.size(), step.replacement) == 0;
  if (!starts && (step.prepend == 1 || (step.prepend == 2 && first_piece))) s = step.replacement + s;
  if (!step.split) {
    out.push_back(std::move(s));
    return;
  }
  // Split before every replacement character, keeping it at the piece's start.
  size_t start = 0;
  for (size_t i = step.replacement.size(); i <= s.size();) {
    const size_t f = s.find(step.replacement, i);
    if (f == std::string::npos) break;
    out.push_back(s.substr(start, f - start));
    start = f;
    i = f + step.replacement.size();
  }
  out.push_back(s.substr(start));
}

std::vector<std::string> pre_tokenize(const std::vector<PreTokenizeStep>& steps, std::string_view text,
                                      bool first_section) {
  std::vector<std::string> pieces;
  if (text.empty()) return pieces;
  pieces.emplace_back(text);
  for (const auto& step : steps) {
    std::vector<std::string> next;
    next.reserve(pieces.size());
    for (size_t i = 0; i < pieces.size(); ++i) {
      const std::string& piece = pieces[i];
      switch (step.kind) {
        case PreTokenizeStep::Kind::Split:
          split_pieces(*step.regex, step.behavior, step.invert, piece, next);
          break;
        case PreTokenizeStep::Kind::ByteLevel: {
          // Order as in HF's ByteLevel: prefix, regex split, then byte mapping.
          std::string p = (step.add_prefix_space && piece[0] != ' ') ? " " + piece : piece;
          if (step.regex) {
            std::vector<std::string> split;
            split_pieces(*step.regex, SplitBehavior::Isolated, false, p, split);
            for (const auto& s : split) next.push_back(bytes_to_byte_level(s));
          } else {
            next.push_back(bytes_to_byte_level(p));
          }
          break;
        }
        case PreTokenizeStep::Kind::Metaspace:
          metaspace(step, piece, first_section && i == 0, next);  // only piece 0 starts at offset 0
          break;
      }
    }
    pieces.clear();
    for (auto& s : next)
      if (!s.empty()) pieces.push_back(std::move(s));
  }
  return pieces;
}

}  // namespace podkv::tok
