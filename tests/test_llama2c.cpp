// podkv convert --from llama2c on karpathy's stories260K (../shared/data):
// greedy decoding from BOS tells the model's known story, from the model
// directory and from the GGUF file; the "ak42" version-1 layout and a
// separate classifier (files rewritten here from the legacy one) convert to
// the same weights; the converted tokenizer runs the same in podkv's GGUF
// vocabulary and in libsentencepiece; bad files fail with one line.
#include <gtest/gtest.h>

#include <cstring>

#include "cli_run.h"
#include "convert/llama2c.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer.h"

namespace podkv::clitest {
namespace {

const fs::path kLlama2c = kSourceDir / ".." / "shared" / "data" / "models" / "llama2c";
const fs::path kStoriesModel = kLlama2c / "stories260K.bin", kTok = kLlama2c / "tok512.bin";

// stories260K's greedy story from BOS, 200 tokens: the text llama2.c's
// test_all.py expects of `run stories260K.bin -z tok512.bin -t 0 -n 200`.
constexpr const char* kStory =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a "
    "big, red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to "
    "play with your ball, but I can't find it.\"\n"
    "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\n"
    "Lily didn't want to help her mom, so she";

#define SKIP_WITHOUT_SHARED() \
  if (!fs::exists(kStoriesModel) || !fs::exists(kTok)) GTEST_SKIP() << kLlama2c << " absent"

using Llama2c = CliTest;

// The generated text without the space SentencePiece's first piece carries
// and the newline podkv generate ends with.
std::string story_text(std::string s) {
  if (s.starts_with(" ")) s.erase(0, 1);
  if (s.ends_with("\n")) s.pop_back();
  return s;
}

TEST_F(Llama2c, Stories260KTellsItsStoryFromDirectoryAndGguf) {
  SKIP_WITHOUT_SHARED();
  const std::string dir = (tmp_ / "stories").string(), gguf = (tmp_ / "stories.gguf").string();
  for (const std::string& out : {dir, gguf}) {
    const CliResult c = run({"convert", "--from", "llama2c", "-m", kStoriesModel.string(), "--tokenizer", kTok.string(),
                             "--out", out});
    ASSERT_EQ(c.exit_code, 0) << c;
    const CliResult g = run({"generate", "-m", out, "-p", "", "-n", "200", "--temperature", "0", "-t", "1"});
    ASSERT_EQ(g.exit_code, 0) << g;
    EXPECT_EQ(story_text(g.out), kStory) << out;
  }
  EXPECT_TRUE(fs::exists(fs::path(dir) / "tokenizer.model"));
  EXPECT_FALSE(fs::exists(gguf + ".llama2c.tmp")) << "the scratch directory was left behind";
}

// Rewrites the legacy stories260K as version 1 (norms first, no RoPE tables)
// and/or with a separate classifier (a copy of the embedding).
std::string rewrite(const std::string& legacy, bool version1, bool separate) {
  int32_t h[7];
  std::memcpy(h, legacy.data(), 28);
  const size_t dim = h[0], hidden = h[1], L = h[2], heads = h[3], kv = h[4], V = h[5], seq = h[6];
  const size_t hd = dim / heads;
  const char* w = legacy.data() + 28;
  std::vector<std::pair<const char*, size_t>> seg;  // (start, floats) in legacy order
  for (size_t n : {V * dim, L * dim, L * dim * dim, L * dim * kv * hd, L * dim * kv * hd, L * dim * dim, L * dim,
                   L * dim * hidden, L * dim * hidden, L * dim * hidden, dim, seq * hd}) {
    seg.emplace_back(w, n);
    w += 4 * n;
  }
  auto bytes = [&](size_t i) { return std::string(seg[i].first, 4 * seg[i].second); };
  std::string out;
  int32_t vocab = static_cast<int32_t>(V);
  if (version1) {
    const uint32_t magic = 0x616b3432;
    const int32_t version = 1;
    out.append(reinterpret_cast<const char*>(&magic), 4).append(reinterpret_cast<const char*>(&version), 4);
    out.append(reinterpret_cast<const char*>(h), 28);
    out += static_cast<char>(separate ? 0 : 1);
    out.resize(256, '\0');
    for (size_t i : {1, 6, 10, 0, 2, 3, 4, 5, 7, 8, 9}) out += bytes(i);
  } else {
    if (separate) vocab = -vocab;
    std::memcpy(h + 5, &vocab, 4);
    out.append(reinterpret_cast<const char*>(h), 28);
    for (size_t i = 0; i < seg.size(); ++i) out += bytes(i);
  }
  if (separate) out += bytes(0);
  return out;
}

TEST_F(Llama2c, Version1AndSeparateClassifierGiveTheSameWeights) {
  SKIP_WITHOUT_SHARED();
  const std::string legacy = read_text(kStoriesModel);
  convert_llama2c(kStoriesModel.string(), "", (tmp_ / "ref").string());
  const std::string ref = read_text(tmp_ / "ref" / "model.safetensors");
  for (bool version1 : {true, false}) {
    for (bool separate : {false, true}) {
      if (!version1 && !separate) continue;  // the file itself
      const std::string name = std::string(version1 ? "v1" : "legacy") + (separate ? "_cls" : "");
      write_text(tmp_ / (name + ".bin"), rewrite(legacy, version1, separate));
      const Llama2cConvertResult r = convert_llama2c((tmp_ / (name + ".bin")).string(), "", (tmp_ / name).string());
      EXPECT_EQ(r.version, version1 ? 1 : 0) << name;
      EXPECT_EQ(r.shared_classifier, !separate) << name;
      if (!separate) {
        EXPECT_EQ(read_text(tmp_ / name / "model.safetensors"), ref) << name;
        continue;
      }
      const auto f = safetensors::File::open((tmp_ / name / "model.safetensors").string());
      const auto* emb = f.find("model.embed_tokens.weight");
      const auto* cls = f.find("lm_head.weight");
      ASSERT_TRUE(emb && cls) << name;
      ASSERT_EQ(emb->nbytes, cls->nbytes);
      EXPECT_EQ(std::memcmp(emb->data, cls->data, emb->nbytes), 0) << name;
    }
  }
}

TEST_F(Llama2c, TokenizerRunsTheSameInGgufAndSentencePiece) {
  SKIP_WITHOUT_SHARED();
  const std::string dir = (tmp_ / "m").string(), gguf = (tmp_ / "m.gguf").string();
  convert_llama2c(kStoriesModel.string(), kTok.string(), dir);
  convert_llama2c(kStoriesModel.string(), kTok.string(), gguf);
  const auto spm = load_tokenizer(dir);  // tokenizer.model through libsentencepiece (when built with it)
  const auto gg = load_tokenizer(gguf);  // podkv's own "llama" vocabulary
  EXPECT_EQ(gg->vocab_size(), 512);
  EXPECT_EQ(gg->bos_id(), 1);
  EXPECT_EQ(gg->eos_ids(), std::vector<int32_t>{2});
  for (const std::string& text : {std::string(kStory), std::string("  two  spaces\nand a newline"), std::string("caf\xC3\xA9 \xE2\x9C\x93 ~]"),
                                 std::string("Lily's dog, Max, said: \"Hi!\""), std::string("")}) {
    const auto ids = gg->encode(text, true);
    EXPECT_EQ(spm->encode(text, true), ids) << text;
    EXPECT_EQ(gg->decode(std::vector<int32_t>(ids.begin() + 1, ids.end())), text);
  }
}

// One line, "error: ...", naming the file.
void expect_file_error(const CliResult& r, const std::string& file, const std::string& what) {
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_TRUE(r.err.starts_with("error: ")) << r;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
  EXPECT_NE(r.err.find(file), std::string::npos) << r;
  EXPECT_NE(r.err.find(what), std::string::npos) << r;
}

TEST_F(Llama2c, BadFilesFailWithOneLine) {
  SKIP_WITHOUT_SHARED();
  const std::string legacy = read_text(kStoriesModel);
  auto convert = [&](const fs::path& model, const fs::path& tok = kTok) {
    return run({"convert", "--from", "llama2c", "-m", model.string(), "--tokenizer", tok.string(), "--out",
                (tmp_ / "out").string()});
  };
  const fs::path bin = tmp_ / "bad.bin";
  write_text(bin, legacy.substr(0, 20));
  expect_file_error(convert(bin), bin.string(), "truncated");
  write_text(bin, legacy.substr(0, legacy.size() - 4));
  expect_file_error(convert(bin), bin.string(), "implies 1056540 bytes");
  write_text(bin, legacy + "xxxx");
  expect_file_error(convert(bin), bin.string(), "implies 1056540 bytes");
  std::string v2 = rewrite(legacy, true, false);
  v2[4] = 2;
  write_text(bin, v2);
  expect_file_error(convert(bin), bin.string(), "version 2");
  std::string zero_heads = legacy;
  std::memset(zero_heads.data() + 12, 0, 4);
  write_text(bin, zero_heads);
  expect_file_error(convert(bin), bin.string(), "n_heads 0");
  const fs::path tok = tmp_ / "bad_tok.bin";
  const std::string tok512 = read_text(kTok);
  write_text(tok, tok512.substr(0, tok512.size() - 3));
  expect_file_error(convert(kStoriesModel, tok), tok.string(), "token 511");
  write_text(tok, tok512 + tok512.substr(4, 13));
  expect_file_error(convert(kStoriesModel, tok), tok.string(), "holds 513 tokens");
  expect_file_error(run({"convert", "--from", "nope", "-m", kStoriesModel.string(), "--out", "x.gguf"}), "--from", "nope");
  EXPECT_FALSE(fs::exists(tmp_ / "out")) << "a failed conversion left output behind";
}

}  // namespace
}  // namespace podkv::clitest
