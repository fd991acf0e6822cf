// Token files (podkv tokenize-data, train/token_file.h): the ids written are
// the stream train --data builds from the text and read back unchanged; train
// from a token file equals train from its text to the bit; the tokenizer
// fingerprint is the same for a tokenizer.json and its GGUF export and differs
// for other merges; a damaged file or another tokenizer is one clear error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "cli_run.h"
#include "convert/gguf_export.h"
#include "model/model.h"
#include "tokenizer/fingerprint.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "train/token_file.h"
#include "util/error.h"

namespace podkv::clitest {
namespace {

// The message of the Error `f` throws ("" when it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class TrainTokenFile : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    tokenizer_ = load_tokenizer(kLlama3Tokenizer.string());
    std::string a, b;
    for (int i = 0; i < 300; ++i) a += "line " + std::to_string(i) + " of a small text to train on.\r\n";
    for (int i = 0; i < 100; ++i) b += "Another file, line " + std::to_string(i) + ": caf\xc3\xa9 <|eot_id|>\n";
    text_a_ = tmp_ / "a.txt";
    text_b_ = tmp_ / "b.txt";
    write_text(text_a_, a);
    write_text(text_b_, b);
  }

  // The token file of `files`, as tokenize-data writes it.
  fs::path write_tokens(const std::vector<std::string>& files, const std::string& name) {
    const fs::path out = tmp_ / name;
    const std::vector<int32_t> stream = train::corpus_stream(files, *tokenizer_);
    train::write_token_file(out.string(), stream, tokenizer_->vocab_size(), tokenizer_fingerprint(*tokenizer_));
    return out;
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  fs::path text_a_, text_b_;
};

TEST_F(TrainTokenFile, RoundTripsTheTextStream) {
  const std::vector<std::string> texts = {text_a_.string(), text_b_.string()};
  const std::vector<int32_t> stream = train::corpus_stream(texts, *tokenizer_);
  const fs::path file = write_tokens(texts, "ab.tokens");
  EXPECT_TRUE(train::is_token_file(file.string()));
  EXPECT_FALSE(train::is_token_file(text_a_.string()));
  EXPECT_EQ(fs::file_size(file), train::kTokenFileHeaderBytes + 2 * stream.size());  // 1007 ids fit uint16

  std::vector<int32_t> read = {7};  // appended after what is there
  const train::TokenFileHeader h = train::read_token_file(file.string(), read);
  EXPECT_EQ(h.version, train::kTokenFileVersion);
  EXPECT_EQ(h.id_bytes, 2u);
  EXPECT_EQ(h.vocab_size, 1007u);
  EXPECT_EQ(h.fingerprint, tokenizer_fingerprint(*tokenizer_));
  EXPECT_EQ(h.tokens, stream.size());
  ASSERT_EQ(read.size(), stream.size() + 1);
  EXPECT_EQ(std::vector<int32_t>(read.begin() + 1, read.end()), stream);

  // Files end with EOS, and the special token in the text is one id.
  ASSERT_FALSE(tokenizer_->eos_ids().empty());
  EXPECT_EQ(stream.back(), tokenizer_->eos_ids().front());
  EXPECT_NE(std::find(stream.begin(), stream.end(), 1004), stream.end());

  // Above 65,536 ids the file holds uint32.
  const std::vector<int32_t> wide = {0, 65535, 65536, 99999, 3};
  const fs::path wide_file = tmp_ / "wide.tokens";
  EXPECT_EQ(train::write_token_file(wide_file.string(), wide, 100000, 42).id_bytes, 4u);
  EXPECT_EQ(fs::file_size(wide_file), train::kTokenFileHeaderBytes + 4 * wide.size());
  std::vector<int32_t> wide_read;
  EXPECT_EQ(train::read_token_file(wide_file.string(), wide_read).fingerprint, 42u);
  EXPECT_EQ(wide_read, wide);

  // An id outside the vocabulary is refused, and no file is left behind.
  const fs::path bad = tmp_ / "bad.tokens";
  EXPECT_NE(error_of([&] { train::write_token_file(bad.string(), {1, 1007}, 1007, 0); }).find("outside the vocabulary"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(bad));
  EXPECT_FALSE(fs::exists(bad.string() + ".tmp"));
}

// The same corpus (train part and held-out tail) from text, from its token
// file, and from a token file followed by text.
TEST_F(TrainTokenFile, CorpusEqualsTheTextCorpus) {
  const fs::path a_tokens = write_tokens({text_a_.string()}, "a.tokens");
  const fs::path ab_tokens = write_tokens({text_a_.string(), text_b_.string()}, "ab.tokens");
  const train::Corpus text = train::load_corpus({text_a_.string(), text_b_.string()}, *tokenizer_, 0.1);
  ASSERT_GT(text.validation.size(), 100u);
  for (const std::vector<std::string>& files : std::vector<std::vector<std::string>>{
           {ab_tokens.string()}, {a_tokens.string(), text_b_.string()}}) {
    const train::Corpus c = train::load_corpus(files, *tokenizer_, 0.1);
    EXPECT_EQ(c.train, text.train) << files.front();
    EXPECT_EQ(c.validation, text.validation) << files.front();
  }
}

// One fingerprint for tokenizer.json and the GGUF podkv convert writes from
// it; another for the same vocabulary with fewer merges, or another tokenizer.
TEST_F(TrainTokenFile, FingerprintFollowsTheTokenizerNotTheFile) {
  const uint64_t json = tokenizer_fingerprint(*load_tokenizer((kRefModel / "tokenizer.json").string()));
  EXPECT_EQ(json, tokenizer_fingerprint(*tokenizer_));  // the fixture is the reference model's tokenizer
  const fs::path gguf = tmp_ / "ref.gguf";
  ASSERT_TRUE(export_gguf(*Model::load(kRefModel.string()), gguf.string()).tokenizer_embedded);
  EXPECT_EQ(tokenizer_fingerprint(*load_tokenizer(gguf.string())), json);

  const fs::path fewer = tmp_ / "fewer_merges.json";
  fs::copy_file(kLlama3Tokenizer, fewer);
  edit_json(fewer, [](nlohmann::json& j) { j["model"]["merges"].erase(j["model"]["merges"].end() - 1); });
  const auto fewer_tok = load_tokenizer(fewer.string());
  ASSERT_EQ(fewer_tok->vocab_size(), tokenizer_->vocab_size());
  EXPECT_NE(tokenizer_fingerprint(*fewer_tok), json);

  // A token file refuses a tokenizer with other merges, naming the file.
  const fs::path file = write_tokens({text_a_.string()}, "a.tokens");
  const std::string e = error_of([&] { train::load_corpus({file.string()}, *fewer_tok, 0); });
  EXPECT_TRUE(e.starts_with(file.string() + ": token file made by another tokenizer")) << e;
}

// Every kind of damage is one Error naming the file, and nothing is appended.
TEST_F(TrainTokenFile, DamagedFilesAreRefused) {
  const fs::path good = write_tokens({text_a_.string()}, "a.tokens");
  const std::string bytes = read_text(good);
  const uint64_t tokens = (bytes.size() - train::kTokenFileHeaderBytes) / 2;
  auto damaged = [&](const std::string& name, const std::string& content) {
    const fs::path p = tmp_ / name;
    write_text(p, content);
    std::vector<int32_t> out;
    const std::string e = error_of([&] { train::read_token_file(p.string(), out); });
    EXPECT_TRUE(out.empty()) << name;
    EXPECT_TRUE(e.starts_with(p.string() + ": ")) << name << ": " << e;
    return e;
  };
  auto patched = [&](size_t offset, uint32_t value) {
    std::string b = bytes;
    std::memcpy(&b[offset], &value, 4);
    return b;
  };
  EXPECT_NE(damaged("magic.tokens", "PODKVTOX" + bytes.substr(8)).find("no PODKVTOK magic"), std::string::npos);
  EXPECT_NE(damaged("short.tokens", bytes.substr(0, 20)).find("truncated token file (20 bytes"), std::string::npos);
  EXPECT_NE(damaged("cut.tokens", bytes.substr(0, bytes.size() - 3))
                .find("the header says " + std::to_string(tokens) + " tokens, " + std::to_string(tokens - 2) +
                      " are there"),
            std::string::npos);
  EXPECT_NE(damaged("long.tokens", bytes + "x").find("1 bytes after"), std::string::npos);
  EXPECT_NE(damaged("version.tokens", patched(8, 2)).find("format version 2"), std::string::npos);
  EXPECT_NE(damaged("width.tokens", patched(12, 3)).find("3 bytes per id"), std::string::npos);
  EXPECT_NE(damaged("vocab.tokens", patched(16, 70000)).find("vocabulary size 70000 with 2-byte ids"),
            std::string::npos);
  EXPECT_NE(damaged("id.tokens", patched(train::kTokenFileHeaderBytes + 10, 0xffff)).find("token 5 is id 65535"),
            std::string::npos);
  EXPECT_NE(damaged("empty.tokens", bytes.substr(0, 32) + std::string(8, '\0')).find("holds no tokens"),
            std::string::npos);

  // Through load_corpus: a damaged magic is not taken for text.
  const fs::path magic = tmp_ / "magic.tokens";
  const std::string e = error_of([&] { train::load_corpus({magic.string()}, *tokenizer_, 0); });
  EXPECT_NE(e.find("holds a NUL byte"), std::string::npos) << e;
}

// ---- the CLI ----

class TrainTokenFileCli : public TrainTokenFile {
 protected:
  fs::path write_config() {
    const fs::path p = tmp_ / "config.json";
    nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 1007},
                        {"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2},
                        {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8},
                        {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
                        {"tie_word_embeddings", false}};
    write_text(p, j.dump(2));
    return p;
  }

  // One "error: ..." line naming `what`, exit 1, no checkpoint in `out`.
  void expect_clean_failure(const CliResult& r, const std::string& what, const fs::path& out = {}) {
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_TRUE(r.err.starts_with("error: ")) << r;
    EXPECT_NE(r.err.find(what), std::string::npos) << r;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
    if (!out.empty()) {
      EXPECT_FALSE(fs::exists(out / "model.safetensors")) << r;
    }
  }

  // (loss, eval_loss) of every log line, in order.
  std::vector<std::pair<double, double>> losses(const fs::path& log) {
    std::vector<std::pair<double, double>> out;
    std::istringstream in(read_text(log));
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line);
      out.emplace_back(j.value("loss", -1.0), j.value("eval_loss", -1.0));
    }
    return out;
  }
};

// tokenize-data, then the same training run from the text and from the token
// file: every loss, the held-out losses and the weights are bit-identical.
TEST_F(TrainTokenFileCli, TrainingFromTokensEqualsTrainingFromText) {
  const fs::path tokens = tmp_ / "corpus.tokens";
  const CliResult t = run({"tokenize-data", "--tokenizer", kLlama3Tokenizer.string(), "--data", text_a_.string(),
                           text_b_.string(), "--out", tokens.string()});
  ASSERT_EQ(t.exit_code, 0) << t;
  const uint64_t count = (fs::file_size(tokens) - train::kTokenFileHeaderBytes) / 2;
  EXPECT_NE(t.err.find(std::to_string(count) + " tokens (uint16 ids"), std::string::npos) << t;
  EXPECT_NE(t.err.find(std::to_string(fs::file_size(tokens)) + " bytes"), std::string::npos) << t;
  EXPECT_NE(t.err.find("tokens/s"), std::string::npos) << t;

  const std::string config = write_config().string();
  auto train_on = [&](const std::vector<std::string>& data, const std::string& out) {
    std::vector<std::string> args = {"train", "--config", config, "--tokenizer", kLlama3Tokenizer.string(), "--seq-len",
                                     "32", "--batch", "4", "--steps", "5", "--eval-every", "2", "--eval-batches", "2",
                                     "--val-fraction", "0.1", "--seed", "3", "--out", (tmp_ / out).string(), "-t", "1",
                                     "--data"};
    args.insert(args.end(), data.begin(), data.end());
    const CliResult r = run(args);
    EXPECT_EQ(r.exit_code, 0) << r;
    return losses(tmp_ / out / "train_log.jsonl");
  };
  const auto from_text = train_on({text_a_.string(), text_b_.string()}, "text");
  const auto from_tokens = train_on({tokens.string()}, "tokens");
  ASSERT_GE(from_text.size(), 8u);
  EXPECT_EQ(from_tokens, from_text);
  EXPECT_EQ(read_text(tmp_ / "tokens" / "model.safetensors"), read_text(tmp_ / "text" / "model.safetensors"));
}

// adapt reads a token file made with -m MODEL, and refuses one of another tokenizer.
TEST_F(TrainTokenFileCli, AdaptReadsTokenFilesOfItsTokenizer) {
  const fs::path model = tmp_ / "model";
  ASSERT_EQ(run({"create-model", "--out", model.string(), "--tokenizer", kLlama3Tokenizer.string()}).exit_code, 0);
  const fs::path tokens = tmp_ / "model.tokens";
  ASSERT_EQ(run({"tokenize-data", "-m", model.string(), "--data", text_a_.string(), "--out", tokens.string()}).exit_code,
            0);
  const std::vector<std::string> adapt = {"adapt", "-m", model.string(), "--pod-group", "2", "--sink", "2", "--recent",
                                          "8", "--seq-len", "32", "--batch", "2", "--steps", "2", "--eval-batches",
                                          "1", "-t", "1", "--data"};
  auto with = [&](const fs::path& data, const fs::path& out) {
    std::vector<std::string> args = adapt;
    args.insert(args.end(), {data.string(), "--out", out.string()});
    return args;
  };
  const CliResult ok = run(with(tokens, tmp_ / "adapted"));
  ASSERT_EQ(ok.exit_code, 0) << ok;
  EXPECT_TRUE(fs::exists(tmp_ / "adapted" / "pod.json"));

  const fs::path fewer = tmp_ / "fewer_merges.json";
  fs::copy_file(kLlama3Tokenizer, fewer);
  edit_json(fewer, [](nlohmann::json& j) { j["model"]["merges"].erase(j["model"]["merges"].end() - 1); });
  const fs::path other = tmp_ / "other.tokens";
  ASSERT_EQ(run({"tokenize-data", "--tokenizer", fewer.string(), "--data", text_a_.string(), "--out", other.string()})
                .exit_code,
            0);
  expect_clean_failure(run(with(other, tmp_ / "refused")), other.string() + ": token file made by another tokenizer",
                       tmp_ / "refused");
}

TEST_F(TrainTokenFileCli, BadInputFailsCleanly) {
  const std::string config = write_config().string();
  const fs::path tokens = tmp_ / "a.tokens";
  ASSERT_EQ(run({"tokenize-data", "--tokenizer", kLlama3Tokenizer.string(), "--data", text_a_.string(), "--out",
                 tokens.string()}).exit_code,
            0);
  const std::string bytes = read_text(tokens);
  auto train_on = [&](const fs::path& data, const std::string& tokenizer = kLlama3Tokenizer.string()) {
    return run({"train", "--config", config, "--tokenizer", tokenizer, "--seq-len", "32", "--steps", "1", "--data",
                data.string(), "--out", (tmp_ / "out").string(), "-t", "1"});
  };
  const fs::path spm = kSourceDir / "tests" / "fixtures" / "tokenizers" / "spm_bpe" / "tokenizer.model";
  bool have_spm = true;  // podkv reads tokenizer.model through libsentencepiece
  try {
    load_tokenizer(spm.string());
  } catch (const Error&) {
    have_spm = false;
  }
  if (have_spm) {
    // Another vocabulary size (800) is named before the fingerprint.
    const CliResult r = run({"train", "--config", config, "--tokenizer", spm.string(), "--seq-len", "32", "--steps",
                             "1", "--data", tokens.string(), "--out", (tmp_ / "out").string()});
    expect_clean_failure(r, tokens.string() + ": token file made for a vocabulary of 1007 tokens, the tokenizer has 800",
                         tmp_ / "out");
  }
  const fs::path cut = tmp_ / "cut.tokens", magic = tmp_ / "magic.tokens";
  write_text(cut, bytes.substr(0, bytes.size() / 2));
  expect_clean_failure(train_on(cut), cut.string() + ": truncated token file", tmp_ / "out");
  write_text(magic, "PODKVTOX" + bytes.substr(8));
  expect_clean_failure(train_on(magic), magic.string() + ": line 1 holds a NUL byte", tmp_ / "out");

  // tokenize-data's own input errors.
  const std::string out = (tmp_ / "x.tokens").string();
  expect_clean_failure(run({"tokenize-data", "--data", text_a_.string(), "--out", out}), "give one of --tokenizer and -m");
  expect_clean_failure(run({"tokenize-data", "--tokenizer", kLlama3Tokenizer.string(), "--data", (tmp_ / "none.txt").string(),
                            "--out", out}),
                       "none.txt: cannot read the data file");
  write_text(tmp_ / "empty.txt", "");
  expect_clean_failure(run({"tokenize-data", "--tokenizer", kLlama3Tokenizer.string(), "--data", (tmp_ / "empty.txt").string(),
                            "--out", out}),
                       "empty.txt: the data file holds no text");
  expect_clean_failure(run({"tokenize-data", "-m", (tmp_ / "no_model").string(), "--data", text_a_.string(), "--out",
                            out}),
                       "no_model");
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace podkv::clitest
