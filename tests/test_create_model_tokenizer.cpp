// podkv create-model --tokenizer copies the tokenizer into the model
// directory under the name the directory is searched for, whatever the source
// file is called, so that the model finds it.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "model/create.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace podkv::clitest {
namespace {

using CreateModelTokenizer = CliTest;

const fs::path kTokenizers = kSourceDir / "tests" / "fixtures" / "tokenizers";

TEST_F(CreateModelTokenizer, CopiedUnderItsCanonicalName) {
  // Renamed copies of both kinds: the model directory must still find them.
  fs::copy_file(kTokenizers / "spm_bpe" / "tokenizer.model", tmp_ / "my_spm.bin");
  fs::copy_file(kTokenizers / "bpe_llama3" / "tokenizer.json", tmp_ / "vocab.json");
  std::vector<std::pair<std::string, std::string>> cases = {{"my_spm.bin", "tokenizer.model"},
                                                            {"vocab.json", "tokenizer.json"}};
  // A GGUF vocabulary becomes tokenizer.gguf.
  const fs::path gguf = kSourceDir / ".." / "shared" / "data" / "gguf-vocab" / "ggml-vocab-llama-spm.gguf";
  if (fs::exists(gguf)) {
    fs::copy_file(gguf, tmp_ / "llama.vocab");
    cases.emplace_back("llama.vocab", "tokenizer.gguf");
  }
  for (const auto& [file, canonical] : cases) {
    const fs::path out = tmp_ / (canonical + "_model");
    if (canonical == "tokenizer.model") {
      try {
        load_tokenizer((tmp_ / file).string());
      } catch (const Error&) {
        continue;  // podkv built without libsentencepiece
      }
    }
    const CliResult c = run({"create-model", "--out", out.string(), "--tokenizer", (tmp_ / file).string()});
    ASSERT_EQ(c.exit_code, 0) << c;
    EXPECT_TRUE(fs::exists(out / canonical)) << canonical;
    EXPECT_FALSE(fs::exists(out / file)) << file;
    const CliResult g = run({"generate", "-m", out.string(), "-p", "Hello world", "-n", "2"});
    EXPECT_EQ(g.exit_code, 0) << g;  // a prompt needs the tokenizer the directory found
  }
}

// The named shapes' sizes as their descriptions give them (the 1b preset: Llama 3.2 1B's body with
// a 32K vocabulary, tied embeddings), and an unknown name refused with the list.
TEST(CreatePresets, ShapesAndParameterCounts) {
  EXPECT_NEAR(static_cast<double>(preset_config("100m", 32000).parameter_count()), 100.1e6, 0.1e6);
  const ModelConfig b = preset_config("1b", 32000);
  EXPECT_EQ(b.hidden_size, 2048);
  EXPECT_EQ(b.num_kv_heads, 8);
  EXPECT_EQ(b.head_dim, 64);
  EXPECT_NEAR(static_cast<double>(b.parameter_count()), 1038.68e6, 0.01e6);
  try {
    preset_config("2b", 32000);
    FAIL() << "an unknown preset was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1b"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace podkv::clitest
