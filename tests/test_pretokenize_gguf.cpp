// llama.cpp's pre-tokenizer regex lists (tokenizer.ggml.pre) for the BPE
// vocabularies that have no test vectors in ../shared/data: the pieces each
// list gives on small inputs, worked out by hand from the published regexes
// (each regex an Isolated split of the previous pieces, in order).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tokenizer/pretokenize.h"
#include "util/error.h"

namespace podkv::tok {
namespace {

std::vector<std::string> split(const std::string& pre, const std::string& text) {
  std::vector<PreTokenizeStep> steps;
  for (const std::string& p : gguf_pre_patterns(pre)) {
    PreTokenizeStep s;
    s.kind = PreTokenizeStep::Kind::Split;
    s.regex = Regex::get(p, pre);
    s.behavior = SplitBehavior::Isolated;
    steps.push_back(std::move(s));
  }
  return pre_tokenize(steps, text, true);
}

using Pieces = std::vector<std::string>;

// \p{N} first: every digit alone; then GPT-2's split.
TEST(GgufPreTokenizers, StarcoderAndRefactSplitDigits) {
  for (const char* pre : {"starcoder", "refact"}) {
    EXPECT_EQ(split(pre, "x = 42;"), (Pieces{"x", " =", " ", "4", "2", ";"})) << pre;
    EXPECT_EQ(split(pre, "it's 7up"), (Pieces{"it", "'s", " ", "7", "up"})) << pre;
  }
}

// Punctuation runs (and $+<=>^~|`) first, then GPT-2's split, then digits in threes.
TEST(GgufPreTokenizers, Falcon) {
  EXPECT_EQ(split("falcon", "Hi, 12345!"), (Pieces{"Hi", ",", " ", "123", "45", "!"}));
  EXPECT_EQ(split("falcon", "a+=b"), (Pieces{"a", "+=", "b"}));
}

// Newlines alone, letters with one leading space, punctuation with one, CJK runs, single digits.
TEST(GgufPreTokenizers, DeepseekCoder) {
  EXPECT_EQ(split("deepseek-coder", "Hi, you 42\n"), (Pieces{"Hi", ",", " you", " ", "4", "2", "\n"}));
}

// Llama 3's pattern with one digit per piece and case-insensitive contractions.
TEST(GgufPreTokenizers, Qwen2) {
  EXPECT_EQ(split("qwen2", "I'M 123 ok"), (Pieces{"I", "'M", " ", "1", "2", "3", " ok"}));
  EXPECT_EQ(split("qwen2", "(x)\n\n"), (Pieces{"(x", ")\n\n"}));
}

TEST(GgufPreTokenizers, MptIsGpt2) {
  EXPECT_EQ(gguf_pre_patterns("mpt"), gguf_pre_patterns("gpt2"));
  EXPECT_EQ(split("mpt", "Hello  world 123"), (Pieces{"Hello", " ", " world", " 123"}));
}

TEST(GgufPreTokenizers, UnknownIsNamed) {
  try {
    gguf_pre_patterns("chatglm-bpe");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"chatglm-bpe\""), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace podkv::tok
