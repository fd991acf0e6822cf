// podkv train --init (start from a Hugging Face model's weights) and
// train / adapt --dump-batches (every training micro-batch, for a replay in
// another framework, scripts/train_torch_compare.py): the run starts from
// exactly the directory's weights, the dump has the documented layout and
// holds the batches the data source draws, and misuse gives one error line.
#include <gtest/gtest.h>

#include <cstring>

#include "cli_run.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "train/batch_dump.h"
#include "train/trainer.h"

namespace podkv::clitest {
namespace {

// A trained model (tied embeddings, bf16 weights) whose tokenizer is in its directory.

class TrainInitCli : public CliTest {
 protected:
  fs::path write_training_text() {
    const fs::path p = tmp_ / "text.txt";
    std::string body;
    for (int i = 0; i < 300; ++i) body += "line " + std::to_string(i) + " of a small text to train on.\n";
    write_text(p, body);
    return p;
  }

  static train::Transformer<float> load_weights(const fs::path& dir) {
    auto model = Model::load(dir.string());
    train::Transformer<float> t(model->config());
    t.copy_from(*model);
    return t;
  }

  static std::vector<nlohmann::json> read_log(const fs::path& p) {
    std::vector<nlohmann::json> lines;
    std::ifstream in(p);
    std::string line;
    while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
    return lines;
  }

  void expect_one_line_error(const CliResult& r, const std::string& what) {
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_TRUE(r.err.starts_with("error: ")) << r;
    EXPECT_NE(r.err.find(what), std::string::npos) << r;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
  }
};

// One step at a learning rate too small to move a float32 weight: the
// checkpoint holds the directory's weights, and the first evaluation (before
// any step) is the directory's model's validation loss, not a random model's.
TEST_F(TrainInitCli, StartsFromTheDirectorysWeights) {
  const fs::path text = write_training_text(), out = tmp_ / "out";
  const CliResult r = run({"train", "--init", kRefModel.string(), "--tokenizer", kRefModel.string(),
                           "--data", text.string(), "--seq-len", "32", "--batch", "2", "--steps", "1", "--warmup",
                           "0", "--lr", "1e-30", "--min-lr", "1e-30", "--eval-batches", "2", "--out", out.string(),
                           "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r;

  train::Transformer<float> reference = load_weights(kRefModel), trained = load_weights(out);
  ASSERT_EQ(reference.params().size(), trained.params().size());
  // A weight of exactly 0 may move by ~lr; any other keeps its value.
  size_t differ = 0;
  for (size_t i = 0; i < reference.params().size(); ++i)
    differ += std::fabs(reference.params()[i] - trained.params()[i]) > 1e-20f;
  EXPECT_EQ(differ, 0u) << "of " << reference.params().size() << " weights";
  const nlohmann::json config = nlohmann::json::parse(read_text(out / "config.json"));
  EXPECT_EQ(config["tie_word_embeddings"], true);
  EXPECT_EQ(config["torch_dtype"], "float32");

  auto tokenizer = load_tokenizer(kRefModel.string());
  const train::Corpus corpus = train::load_corpus({text.string()}, *tokenizer, 0.05);
  const train::BatchSource source(&corpus, nullptr, 0, 1);
  const double expected = train::validation_loss(reference, source, 2, 2, 32);
  const auto log = read_log(out / "train_log.jsonl");
  ASSERT_FALSE(log.empty());
  ASSERT_TRUE(log.front().contains("eval_loss")) << log.front();
  EXPECT_NEAR(log.front()["eval_loss"].get<double>(), expected, 1e-5 * expected);

  // A random model of the same shape evaluates far from it (the check can fail).
  const CliResult random = run({"train", "--config", (kRefModel / "config.json").string(), "--tokenizer",
                                kRefModel.string(), "--data", text.string(), "--seq-len", "32", "--batch", "2",
                                "--steps", "1", "--eval-batches", "2", "--out", (tmp_ / "random").string(), "-t", "1"});
  ASSERT_EQ(random.exit_code, 0) << random;
  const double random_loss = read_log(tmp_ / "random" / "train_log.jsonl").front()["eval_loss"].get<double>();
  EXPECT_GT(std::fabs(random_loss - expected), 0.1) << random_loss << " vs " << expected;
}

TEST_F(TrainInitCli, RefusesMisuse) {
  const fs::path text = write_training_text();
  const std::vector<std::string> init = {"train", "--init", kRefModel.string(), "--tokenizer",
                                         kRefModel.string(), "--data", text.string(), "--steps", "1",
                                         "--out", (tmp_ / "out").string()};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = init;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_one_line_error(run(with({"--config", (kRefModel / "config.json").string()})), "--init");
  expect_one_line_error(run(with({"--preset", "tiny"})), "--init");
  expect_one_line_error(run(with({"--init-std", "0.1"})), "--init");
  expect_one_line_error(run(with({"--seq-len", "4096"})), "--seq-len");
  // The tokenizer's 1007 ids do not fit a 512-token model.
  expect_one_line_error(run({"train", "--init", (kFixtures / "llama_mqa_tied").string(), "--tokenizer",
                             kLlama3Tokenizer.string(), "--data", text.string(), "--out", (tmp_ / "out").string()}),
                        "vocabulary");
  expect_one_line_error(run({"train", "--init", (tmp_ / "missing").string(), "--tokenizer", kLlama3Tokenizer.string(),
                             "--data", text.string(), "--out", (tmp_ / "out").string()}),
                        "missing");
  expect_one_line_error(run(with({"--dump-batches", (tmp_ / "no" / "such" / "dir" / "b.bin").string()})),
                        "--dump-batches");
  EXPECT_FALSE(fs::exists(tmp_ / "out" / "model.safetensors"));
}

// int32 little-endian values of a byte string.
std::vector<int32_t> int32s(const std::string& bytes, size_t offset, size_t count) {
  std::vector<int32_t> out(count);
  std::memcpy(out.data(), bytes.data() + offset, count * sizeof(int32_t));
  return out;
}

uint64_t u64(const std::string& bytes, size_t offset) {
  uint64_t v = 0;
  std::memcpy(&v, bytes.data() + offset, sizeof v);
  return v;
}

// The dump of a run with accumulation and synthetic samples (targets of -1)
// mixed into text is, byte for byte, the documented layout of what the
// BatchSource draws for each (step, micro-batch).
TEST_F(TrainInitCli, DumpsEveryMicroBatchInOrder) {
  const fs::path text = write_training_text(), dump = tmp_ / "batches.bin";
  const int64_t steps = 3, accum = 2, batch = 2, seq = 64;
  const nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                                 {"vocab_size", 1007}, {"hidden_size", 32}, {"intermediate_size", 64},
                                 {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"num_key_value_heads", 1},
                                 {"head_dim", 16}, {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-5},
                                 {"rope_theta", 10000.0}, {"tie_word_embeddings", true}};
  write_text(tmp_ / "config.json", config.dump(2));
  const CliResult r = run({"train", "--config", (tmp_ / "config.json").string(), "--tokenizer", kLlama3Tokenizer.string(),
                           "--data", text.string(), "--synthetic", "kv", "--synthetic-fraction", "0.5", "--seq-len",
                           std::to_string(seq), "--batch", std::to_string(batch), "--grad-accum",
                           std::to_string(accum), "--steps", std::to_string(steps), "--seed", "5", "--eval-batches",
                           "1", "--accuracy-samples", "1", "--dump-batches", dump.string(), "--out",
                           (tmp_ / "out").string(), "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::string bytes = read_text(dump);
  train::BatchDumpHeader header;
  header.grad_accum = accum, header.batch = batch, header.seq = seq, header.steps = steps;
  ASSERT_EQ(bytes.size(), train::batch_dump_bytes(header));
  ASSERT_EQ(bytes.size(), 48u + static_cast<size_t>(steps * accum * 8 * batch * seq));
  EXPECT_EQ(bytes.substr(0, 8), "PODKVBAT");
  EXPECT_EQ(int32s(bytes, 8, 2), (std::vector<int32_t>{1, static_cast<int32_t>(accum)}));
  EXPECT_EQ(u64(bytes, 16), static_cast<uint64_t>(batch));
  EXPECT_EQ(u64(bytes, 24), static_cast<uint64_t>(seq));
  EXPECT_EQ(u64(bytes, 32), 0u);
  EXPECT_EQ(u64(bytes, 40), static_cast<uint64_t>(steps));

  auto tokenizer = load_tokenizer(kLlama3Tokenizer.string());
  const train::Corpus corpus = train::load_corpus({text.string()}, *tokenizer, 0.05);
  train::SyntheticOptions so;
  so.tasks = {train::Task::KvRetrieval};
  const train::SyntheticTasks tasks(*tokenizer, so);
  const train::BatchSource source(&corpus, &tasks, 0.5, 5);
  const size_t n = static_cast<size_t>(batch * seq);
  size_t offset = 48, ignored = 0;
  for (int64_t step = 0; step < steps; ++step)
    for (int m = 0; m < accum; ++m, offset += 2 * n * sizeof(int32_t)) {
      const train::Batch b = source.train_batch(step, m, batch, seq);
      EXPECT_EQ(int32s(bytes, offset, n), b.tokens) << "step " << step << " micro-batch " << m;
      EXPECT_EQ(int32s(bytes, offset + n * sizeof(int32_t), n), b.targets) << "step " << step << " micro-batch " << m;
      ignored += static_cast<size_t>(std::count(b.targets.begin(), b.targets.end(), train::kIgnoredTarget));
    }
  EXPECT_GT(ignored, 0u) << "no synthetic sample was drawn: pick another --seed";
}

// adapt dumps its batches too.
TEST_F(TrainInitCli, AdaptDumpsBatches) {
  const fs::path text = write_training_text(), dump = tmp_ / "adapt.bin";
  const CliResult r = run({"adapt", "-m", kRefModel.string(), "--pod-group", "2", "--sink", "2", "--recent",
                           "8", "--data", text.string(), "--seq-len", "32", "--batch", "2", "--steps", "2",
                           "--eval-batches", "1", "--dump-batches", dump.string(), "--out", (tmp_ / "out").string(),
                           "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(fs::file_size(dump), 48u + 2u * 8u * 2u * 32u);
}

}  // namespace
}  // namespace podkv::clitest
