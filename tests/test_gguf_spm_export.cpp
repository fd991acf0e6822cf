// podkv convert embeds a SentencePiece tokenizer.model as llama.cpp's "llama"
// vocabulary, and the chat template: the written GGUF is read back by an
// independent reader (tests/gguf_dump.py, standard library only) whose
// metadata and vocabulary are checked against the source tokenizer, and
// podkv reloads it and tokenizes every case of the SentencePiece fixture as
// SentencePiece does.
#include <gtest/gtest.h>

#include <cstdio>

#include "cli_run.h"
#include "convert/gguf_export.h"
#include "model/create.h"
#include "model/model.h"
#include "tokenizer/bpe.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace podkv::clitest {
namespace {

using json = nlohmann::json;
using GgufSpmExport = CliTest;

const fs::path kSpm = kSourceDir / "tests" / "fixtures" / "tokenizers" / "spm_bpe";
constexpr const char* kTemplate = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}";

// A random tiny model with the fixture's tokenizer.model and 3 rows more than
// its pieces (written as unused padding tokens); the SentencePiece tokenizer
// (through libsentencepiece), or null when podkv was built without it.
std::unique_ptr<Tokenizer> spm_model(const fs::path& dir) {
  std::unique_ptr<Tokenizer> src;
  try {
    src = load_tokenizer((kSpm / "tokenizer.model").string());
  } catch (const Error&) {
    return nullptr;
  }
  ModelConfig c = preset_config("tiny", src->vocab_size() + 3);
  c.bos_token_id = src->bos_id();
  c.eos_token_ids = {src->eos_ids().at(0)};
  create_random_model(c, DType::F32, 1, 0.05, dir.string());
  fs::copy_file(kSpm / "tokenizer.model", dir / "tokenizer.model");
  return src;
}

// tests/gguf_dump.py's JSON for `path`.
json dump_gguf(const fs::path& path) {
  const std::string cmd = "python3 " + (kSourceDir / "tests" / "gguf_dump.py").string() + " " + path.string();
  std::FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return json();
  std::string out;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  if (pclose(p) != 0) return json();
  return json::parse(out);
}

TEST_F(GgufSpmExport, IndependentReaderSeesLlamaVocabularyAndPodkvTokenizesAsSentencePiece) {
  const fs::path dir = tmp_ / "spm";
  const std::unique_ptr<Tokenizer> src = spm_model(dir);
  if (!src) GTEST_SKIP() << "podkv was built without libsentencepiece";
  write_text(dir / "tokenizer_config.json", json{{"chat_template", kTemplate}, {"add_bos_token", true}}.dump());
  const fs::path out = tmp_ / "spm.gguf";
  const GgufExportResult r = export_gguf(*Model::load(dir.string()), out.string(), {});
  ASSERT_TRUE(r.tokenizer_embedded) << r.tokenizer_note;
  EXPECT_TRUE(r.chat_template);

  const json g = dump_gguf(out);
  ASSERT_TRUE(g.is_object()) << "tests/gguf_dump.py could not read " << out;
  const json& m = g["metadata"];
  auto value = [&](const std::string& key, const std::string& type) {
    EXPECT_TRUE(m.contains(key)) << key;
    if (!m.contains(key)) return json();
    EXPECT_EQ(m[key]["type"], type) << key;
    return m[key]["value"];
  };
  EXPECT_EQ(g["version"], 3);
  EXPECT_EQ(value("general.architecture", "string"), "llama");
  EXPECT_EQ(value("tokenizer.ggml.model", "string"), "llama");
  EXPECT_EQ(value("tokenizer.chat_template", "string"), kTemplate);
  EXPECT_EQ(value("tokenizer.ggml.bos_token_id", "uint32"), src->bos_id());
  EXPECT_EQ(value("tokenizer.ggml.eos_token_id", "uint32"), src->eos_ids().at(0));
  EXPECT_EQ(value("tokenizer.ggml.add_bos_token", "bool"), true);
  EXPECT_EQ(value("tokenizer.ggml.add_eos_token", "bool"), false);
  const json tokens = value("tokenizer.ggml.tokens", "array[string]");
  const json scores = value("tokenizer.ggml.scores", "array[float32]");
  const json types = value("tokenizer.ggml.token_type", "array[int32]");
  const size_t rows = static_cast<size_t>(src->vocab_size()) + 3;  // pieces, then unused padding
  ASSERT_EQ(tokens.size(), rows);
  ASSERT_EQ(scores.size(), rows);
  ASSERT_EQ(types.size(), rows);
  for (size_t id = rows - 3; id < rows; ++id) {
    EXPECT_EQ(tokens[id], "[PAD" + std::to_string(id) + "]");
    EXPECT_EQ(types[id], 5);
  }
  EXPECT_EQ(types[value("tokenizer.ggml.unknown_token_id", "uint32").get<int>()], 2);
  EXPECT_EQ(types[src->bos_id()], 3);
  EXPECT_EQ(types[src->eos_ids().at(0)], 3);
  int bytes = 0, normal = 0;
  for (int id = 0; id < src->vocab_size(); ++id) {
    const std::string t = tokens[id];
    if (types[id] == 6) {
      ++bytes;
      EXPECT_EQ(std::string(1, static_cast<char>(tok::parse_byte_token(t))), src->token_bytes(id)) << id;
    } else if (types[id] == 1) {
      ++normal;
      std::string text;
      for (size_t p = 0; p < t.size();) {
        const bool space = t.compare(p, 3, "\xE2\x96\x81") == 0;
        text += space ? std::string(" ") : t.substr(p, 1);
        p += space ? 3 : 1;
      }
      EXPECT_EQ(text, src->token_bytes(id)) << id;
    }
  }
  EXPECT_EQ(bytes, 256);
  EXPECT_GT(normal, 100);
  bool has_embedding = false;
  for (const json& t : g["tensors"]) has_embedding |= t["name"] == "token_embd.weight";
  EXPECT_TRUE(has_embedding);

  const auto reloaded = load_tokenizer(out.string());
  std::istringstream cases(read_text(kSpm / "cases.jsonl"));
  int n = 0;
  for (std::string line; std::getline(cases, line); ++n) {
    const json c = json::parse(line);
    const std::string text = c["text"];
    EXPECT_EQ(reloaded->encode(text, true), src->encode(text, true)) << text;
    EXPECT_EQ(reloaded->encode(text, true), c["ids_bos"].get<std::vector<int32_t>>()) << text;
  }
  EXPECT_GT(n, 200);
}

TEST_F(GgufSpmExport, ConvertCommandSaysTheTokenizerAndTemplateWereEmbedded) {
  const fs::path dir = tmp_ / "spm";
  if (!spm_model(dir)) GTEST_SKIP() << "podkv was built without libsentencepiece";
  write_text(dir / "chat_template.jinja", kTemplate);
  const CliResult c = run({"convert", "-m", dir.string(), "--out", (tmp_ / "m.gguf").string(), "--check-tokens", "8"});
  ASSERT_EQ(c.exit_code, 0) << c;
  EXPECT_NE(c.err.find("tokenizer embedded, chat template"), std::string::npos) << c;
}

}  // namespace
}  // namespace podkv::clitest
