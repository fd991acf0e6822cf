// Pre-tokenization: splitting text into the pieces that BPE runs on, as Hugging
// Face tokenizers' pre-tokenizers do (Split, ByteLevel, Metaspace, Digits, ...)
// and as llama.cpp does for the GGUF "gpt2" vocabularies. Regexes go through
// PCRE2 (UTF + Unicode properties), compiled once and cached.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace podkv::tok {

// A compiled PCRE2 pattern (UTF, UCP). Matching accepts invalid UTF-8: invalid
// bytes simply match nothing, so they end up in the gaps between matches.
class Regex {
 public:
  // Compiled once per distinct pattern for the whole process. Throws Error
  // naming `where` and the PCRE2 message when the pattern does not compile,
  // or "... built without PCRE2" when the library was built without it.
  static std::shared_ptr<const Regex> get(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Byte ranges [begin, end) of the successive non-overlapping matches.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  std::string pattern_;
};

// How a Split keeps what the pattern matched (Hugging Face's
// SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizeStep {
  enum class Kind { Split, ByteLevel, Metaspace };
  Kind kind = Kind::Split;
  // Split: the regex (a literal pattern is escaped into one), the behaviour, invert.
  std::shared_ptr<const Regex> regex;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  // ByteLevel: prefix a space when the piece does not start with one, then
  // split by `regex` (Isolated) when set (HF's use_regex), then map every byte
  // to its stand-in character.
  bool add_prefix_space = false;
  // Metaspace: spaces become `replacement`; prepend it per `prepend` (0 never,
  // 1 always, 2 first piece of the input only); split before each replacement.
  std::string replacement;
  int prepend = 1;
  bool split = true;
};

// Literal text as a PCRE2 pattern that matches exactly that text.
std::string regex_escape(std::string_view literal);

// Applies `steps` in order to one section of input (text between added
// tokens); `first_section` tells Metaspace's "first" scheme whether this
// section starts at offset 0 of the input. Empty pieces are dropped.
std::vector<std::string> pre_tokenize(const std::vector<PreTokenizeStep>& steps, std::string_view text,
                                      bool first_section);

// Splits `text` by `regex` keeping pieces per `behavior` (Hugging Face's Split).
void split_pieces(const Regex& regex, SplitBehavior behavior, bool invert, std::string_view text,
                  std::vector<std::string>& out);

// Well-known split patterns.
extern const char* const kGpt2Pattern;   // GPT-2's ByteLevel(use_regex) pattern
extern const char* const kLlama3Pattern; // Llama 3 (tiktoken cl100k-like)
// Qwen2's and Qwen3's split as their tokenizer.json writes it (llama.cpp's "qwen2" spells the
// case-insensitive contractions out: kQwen2Pattern).
extern const char* const kQwen2JsonPattern;
// llama.cpp's regex list for tokenizer.ggml.pre (each applied as an Isolated
// Split, in order); throws Error naming the pre-tokenizer when unknown.
std::vector<std::string> gguf_pre_patterns(const std::string& pre);

}  // namespace podkv::tok
