// podkv train / adapt / plot-loss end to end: a tiny model learns the passkey
// task from scratch (accuracy, not just loss), its checkpoint loads back in
// podkv, a resumed run equals an uninterrupted one, and bad input gives one
// clear line, exit 1 and no checkpoint.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "io/safetensors.h"
#include "kv/pod_config.h"
#include "model/model.h"
#include "plot/plot.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace podkv::clitest {
namespace {

class TrainCli : public CliTest {
 protected:
  // A 2-layer model small enough to train in seconds on one core.
  fs::path write_config(const std::string& name, int hidden = 64, int context = 256) {
    const fs::path p = tmp_ / name;
    nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 1007},
                        {"hidden_size", hidden}, {"intermediate_size", 2 * hidden}, {"num_hidden_layers", 2},
                        {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", hidden / 4},
                        {"max_position_embeddings", context}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
                        {"tie_word_embeddings", false}};
    write_text(p, j.dump(2));
    return p;
  }

  std::vector<nlohmann::json> read_log(const fs::path& p) {
    std::vector<nlohmann::json> lines;
    std::ifstream in(p);
    std::string line;
    while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
    return lines;
  }

  // The run failed with one "error: ..." line naming `what`, and left no checkpoint.
  void expect_clean_failure(const CliResult& r, const std::string& what, const fs::path& out) {
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_TRUE(r.err.starts_with("error: ")) << r;
    EXPECT_NE(r.err.find(what), std::string::npos) << r;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
    EXPECT_FALSE(fs::exists(out / "model.safetensors")) << r;
    EXPECT_FALSE(fs::exists(out.string() + ".tmp")) << r;
  }
};

// From scratch on one thread (~15 s of CPU): passkey retrieval, a 2-digit key
// at a random depth of 64 tokens (chance: ~1%). At initialisation no sample is
// right; after 600 steps most are (92% when this test was written).
TEST_F(TrainCli, LearnsPasskeyFromScratch) {
  const fs::path out = tmp_ / "passkey";
  const CliResult r = run({"train", "--config", write_config("config.json").string(), "--tokenizer", kLlama3Tokenizer.string(),
                           "--synthetic", "passkey", "--synthetic-fraction", "1", "--passkey-digits", "2",
                           "--seq-len", "64", "--batch", "16", "--steps", "600", "--lr", "3e-3", "--warmup", "20",
                           "--eval-batches", "1", "--accuracy-samples", "64", "--out", out.string(), "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const auto log = read_log(out / "train_log.jsonl");
  ASSERT_GE(log.size(), 600u);
  const nlohmann::json& first = log.front();
  const nlohmann::json& last = log.back();
  ASSERT_TRUE(first.contains("accuracy_passkey") && last.contains("accuracy_passkey")) << first << last;
  const double before = first["accuracy_passkey"], after = last["accuracy_passkey"];
  std::printf("passkey accuracy: %.3f at initialisation, %.3f after 600 steps\n", before, after);
  EXPECT_LT(before, 0.05);
  EXPECT_GT(after, 0.8);
  for (const auto& line : log)
    if (line.contains("loss")) {
      EXPECT_TRUE(line.contains("lr") && line.contains("tokens_per_s")) << line;
    }

  // The checkpoint loads in podkv, and reproduces the logged accuracy.
  auto model = Model::load(out.string());
  train::Transformer<float> t(model->config());
  t.copy_from(*model);
  auto tokenizer = load_tokenizer(out.string());
  train::SyntheticOptions so;
  so.tasks = {train::Task::Passkey};
  so.passkey_digits = 2;
  train::SyntheticTasks tasks(*tokenizer, so);
  train::BatchSource source(nullptr, &tasks, 1.0, 1);
  EXPECT_NEAR(train::task_accuracy(t, source, train::Task::Passkey, 64, 16, 64), after, 0.02);

  if (plot::png_available()) {
    const CliResult p = run({"plot-loss", (out / "train_log.jsonl").string(), "--out", (tmp_ / "loss.png").string()});
    ASSERT_EQ(p.exit_code, 0) << p;
    EXPECT_EQ(read_text(tmp_ / "loss.png").substr(1, 3), "PNG");
    // Two logs overlaid, with labels; a label count that does not match is refused.
    const std::string log = (out / "train_log.jsonl").string();
    const CliResult two = run({"plot-loss", log, log, "--label", "cpu", "--label", "gpu", "--out", (tmp_ / "two.png").string()});
    ASSERT_EQ(two.exit_code, 0) << two;
    EXPECT_NE(two.err.find("2 logs"), std::string::npos) << two;
    EXPECT_EQ(read_text(tmp_ / "two.png").substr(1, 3), "PNG");
    const CliResult bad = run({"plot-loss", log, log, "--label", "cpu", "--out", (tmp_ / "bad.png").string()});
    EXPECT_NE(bad.exit_code, 0);
    EXPECT_NE(bad.err.find("--label"), std::string::npos) << bad;
  }
}

// Stopping at step 3 and resuming gives the same weights as 6 steps in one go.
TEST_F(TrainCli, ResumeEqualsUninterruptedRun) {
  const fs::path text = tmp_ / "text.txt";
  std::string body;
  for (int i = 0; i < 200; ++i) body += "line " + std::to_string(i) + " of a small text to train on.\n";
  write_text(text, body);
  const std::vector<std::string> common = {"train", "--config", write_config("c.json", 32).string(), "--tokenizer",
                                           kLlama3Tokenizer.string(), "--data", text.string(), "--seq-len", "64", "--batch",
                                           "4", "--grad-accum", "2", "--steps", "6", "--synthetic", "kv",
                                           "--synthetic-fraction", "0.25", "-t", "1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = common;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  ASSERT_EQ(run(with({"--out", (tmp_ / "straight").string()})).exit_code, 0);
  ASSERT_EQ(run(with({"--out", (tmp_ / "first").string(), "--stop-at", "3"})).exit_code, 0);
  const CliResult resumed = run(with({"--out", (tmp_ / "second").string(), "--resume", (tmp_ / "first").string()}));
  ASSERT_EQ(resumed.exit_code, 0) << resumed;
  EXPECT_EQ(read_text(tmp_ / "straight" / "model.safetensors"), read_text(tmp_ / "second" / "model.safetensors"));
  EXPECT_EQ(read_text(tmp_ / "straight" / "optimizer.safetensors"), read_text(tmp_ / "second" / "optimizer.safetensors"));
  EXPECT_TRUE(fs::exists(tmp_ / "second" / "tokenizer.json"));
  // Resuming into a different model is refused.
  const CliResult other = run({"train", "--config", write_config("c64.json", 64).string(), "--tokenizer",
                               kLlama3Tokenizer.string(), "--data", text.string(), "--seq-len", "32", "--steps", "6",
                               "--out", (tmp_ / "third").string(), "--resume", (tmp_ / "first").string()});
  expect_clean_failure(other, "--resume", tmp_ / "third");
  EXPECT_NE(other.err.find("another model"), std::string::npos) << other;
}

// adapt writes the fine-tuned model with its pod.json; podkv loads both, and
// the three held-out losses come out as JSON.
TEST_F(TrainCli, AdaptWritesModelWithPodJson) {
  const fs::path model = tmp_ / "model", out = tmp_ / "adapted";
  ASSERT_EQ(run({"create-model", "--out", model.string(), "--tokenizer", kLlama3Tokenizer.string()}).exit_code, 0);
  const CliResult r = run({"adapt", "-m", model.string(), "--pod-group", "2", "--sink", "2", "--recent", "8",
                           "--synthetic", "passkey", "--synthetic-fraction", "1", "--passkey-digits", "2",
                           "--seq-len", "64", "--batch", "2", "--steps", "3", "--eval-batches", "1",
                           "--accuracy-samples", "2", "--out", out.string(), "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const nlohmann::json losses = nlohmann::json::parse(r.out);
  for (const char* key : {"dense_loss", "pod_loss_before", "pod_loss_after"})
    EXPECT_TRUE(losses.contains(key) && losses[key].get<double>() > 0) << r.out;
  EXPECT_NE(losses["dense_loss"].get<double>(), losses["pod_loss_before"].get<double>());
  const PodConfig pod = load_pod_config((out / "pod.json").string(), 4, 2);
  EXPECT_EQ(pod.anchors, (std::vector<std::vector<int>>{{0, 2}, {0, 2}}));
  const CliResult gen = run({"generate", "-m", out.string(), "--kv", "pod", "-p", "The pass key", "-n", "4"});
  EXPECT_EQ(gen.exit_code, 0) << gen;
}

TEST_F(TrainCli, BadInputFailsCleanly) {
  const fs::path small = tmp_ / "small.txt";
  write_text(small, "too short\n");
  const fs::path out = tmp_ / "out";
  const std::string config = write_config("c.json", 32, 128).string();
  expect_clean_failure(run({"train", "--config", config, "--tokenizer", kLlama3Tokenizer.string(), "--data", small.string(),
                            "--seq-len", "64", "--steps", "2", "--out", out.string()}),
                       "--data", out);
  expect_clean_failure(run({"train", "--config", config, "--tokenizer", kLlama3Tokenizer.string(), "--data", small.string(),
                            "--seq-len", "256", "--steps", "2", "--out", out.string()}),
                       "--seq-len", out);
  expect_clean_failure(run({"train", "--config", config, "--tokenizer", kLlama3Tokenizer.string(), "--data",
                            (tmp_ / "missing.txt").string(), "--seq-len", "16", "--out", out.string()}),
                       "missing.txt", out);
  // --synthetic-min-len: longer than the sequence (128), without tasks, without text to fill the rest.
  const fs::path text = tmp_ / "text.txt";
  std::string body;
  for (int i = 0; i < 200; ++i) body += "line " + std::to_string(i) + " of a small text to train on.\n";
  write_text(text, body);
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{"--data", text.string(), "--synthetic", "passkey", "--synthetic-fraction", "0.5",
                                 "--synthetic-min-len", "129"},
        std::vector<std::string>{"--data", text.string(), "--synthetic-min-len", "32"},
        std::vector<std::string>{"--synthetic", "passkey", "--synthetic-fraction", "1", "--synthetic-min-len", "32"}}) {
    std::vector<std::string> args = {"train", "--config", config, "--tokenizer", kLlama3Tokenizer.string(), "--seq-len",
                                     "128", "--steps", "2", "--out", out.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    expect_clean_failure(run(args), "--synthetic-min-len", out);
  }

  // A pod.json for another model (3 KV heads; the model has 2).
  const fs::path model = tmp_ / "model";
  ASSERT_EQ(run({"create-model", "--out", model.string(), "--tokenizer", kLlama3Tokenizer.string()}).exit_code, 0);
  const fs::path pod = tmp_ / "pod.json";
  write_text(pod, R"({"sink_tokens": 4, "recent_tokens": 16, "anchors": [[0, 2], [0], [0, 1]]})");
  expect_clean_failure(run({"adapt", "-m", model.string(), "--pod-config", pod.string(), "--data", small.string(),
                            "--out", out.string()}),
                       "pod.json", out);
}

}  // namespace
}  // namespace podkv::clitest
