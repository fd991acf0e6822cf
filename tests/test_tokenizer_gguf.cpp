// llama.cpp's tokenizer test vectors (models/ggml-vocab-*.gguf with .inp/.out):
// every string must give exactly the expected ids (no BOS, as the vectors
// were made with add_special_tokens=False).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace {

const std::string kVocabDir = PODKV_SOURCE_DIR "/../shared/data/gguf-vocab";

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Every test string is followed by "\n__ggml_vocab_test__\n" (the newline
// before the marker is not part of the string).
std::vector<std::string> split_inputs(const std::string& all) {
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  for (size_t f; (f = all.find(sep, pos)) != std::string::npos; pos = f + sep.size()) out.push_back(all.substr(pos, f - pos));
  return out;
}

std::vector<std::vector<int32_t>> read_outputs(const std::string& all) {
  std::vector<std::vector<int32_t>> out;
  std::istringstream lines(all);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream ids(line);
    std::vector<int32_t> v;
    for (int32_t id; ids >> id;) v.push_back(id);
    out.push_back(std::move(v));
  }
  return out;
}

std::string id_list(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t id : v) s += " " + std::to_string(id);
  return s;
}

void run_vocab(const std::string& name) {
  const std::string path = kVocabDir + "/ggml-vocab-" + name + ".gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  auto file = podkv::gguf::File::open(path);
  auto tok = podkv::load_gguf_tokenizer(file);
  const auto inputs = split_inputs(read_all(path + ".inp"));
  const auto outputs = read_outputs(read_all(path + ".out"));
  ASSERT_EQ(inputs.size(), 46u);
  ASSERT_EQ(inputs.size(), outputs.size());
  int passed = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto got = tok->encode(inputs[i], false);
    EXPECT_EQ(got, outputs[i]) << name << " string " << i << " [" << inputs[i] << "]\n  got:     " << id_list(got)
                               << "\n  expected:" << id_list(outputs[i]);
    passed += got == outputs[i];
    // Decoding gives the text back, up to what the tokenizer cannot represent.
    if (got == outputs[i]) {
      EXPECT_EQ(tok->decode(got), inputs[i]) << name << " " << i;
    }
  }
  EXPECT_EQ(passed, static_cast<int>(inputs.size())) << name;
}

}  // namespace

TEST(TokenizerGguf, LlamaSpm) { run_vocab("llama-spm"); }
TEST(TokenizerGguf, Phi3) { run_vocab("phi-3"); }
TEST(TokenizerGguf, Gpt2) { run_vocab("gpt-2"); }
TEST(TokenizerGguf, DeepseekLlm) { run_vocab("deepseek-llm"); }
TEST(TokenizerGguf, Mpt) { run_vocab("mpt"); }
TEST(TokenizerGguf, Refact) { run_vocab("refact"); }

TEST(TokenizerGguf, SpmBosAndDecode) {
  const std::string path = kVocabDir + "/ggml-vocab-llama-spm.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  auto file = podkv::gguf::File::open(path);
  auto tok = podkv::load_gguf_tokenizer(file);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_TRUE(tok->is_eos(2));
  const auto ids = tok->encode("Hello world", true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok->encode("", true), std::vector<int32_t>{1});
  EXPECT_TRUE(tok->encode("", false).empty());
  const std::vector<int32_t> plain(ids.begin() + 1, ids.end());
  EXPECT_EQ(tok->decode(plain), "Hello world");
  // Control tokens written in the text are single tokens.
  const auto sp = tok->encode("a</s>b", false);
  EXPECT_NE(std::find(sp.begin(), sp.end(), 2), sp.end());
  EXPECT_THROW(tok->token_bytes(32000), podkv::Error);
}
