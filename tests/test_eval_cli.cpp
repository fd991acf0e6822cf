// podkv eval end to end on the tiny default model: agreement (dense and
// one-layer PoD exact, KV bytes in the table equal to the cache's), windows
// without BOS (--no-bos), a passkey grid with its heatmap and --resume, niah
// with a custom needle, and bad input (one line on stderr, exit 1).
#include <set>

#include "cli_run.h"
#include "plot/plot.h"

namespace podkv::clitest {
namespace {

using nlohmann::json;

class EvalCli : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    model_ = (tmp_ / "model").string();
    const auto r = run({"create-model", "--preset", "tiny", "--tokenizer",
                        (kSourceDir / "tests/fixtures/tokenizers/bpe_llama3/tokenizer.json").string(), "--out", model_});
    ASSERT_EQ(r.exit_code, 0) << r;
    text_ = (tmp_ / "text.txt").string();
    std::string text;
    const char* words[] = {"river", "apple", "window", "garden", "silver", "morning", "letter", "mountain"};
    for (int i = 0; i < 150; ++i)
      text += std::string("The ") + words[i % 8] + " near the " + words[(i * 3 + 1) % 8] + " was quiet on day " +
              std::to_string(i) + ".\n";
    write_text(text_, text);
  }

  json results(const std::string& out) { return json::parse(read_text(fs::path(out) / "results.json")); }

  static const json& policy(const json& results, const std::string& label) {
    for (const auto& p : results["policies"])
      if (p["label"] == label) return p;
    throw std::runtime_error("no policy " + label);
  }

  std::string model_, text_;
};

TEST_F(EvalCli, AgreementIsExactForDenseAndOneLayerPod) {
  const std::string out = (tmp_ / "agreement").string();
  const auto r = run({"eval", "-m", model_, "--task", "agreement", "--kv",
                      "dense,pod:group=1,pod:group=2:sink=4:recent=16,streaming:sink=4:recent=16,cla", "--data", text_,
                      "-c", "96", "--prefill", "48", "--decode-chunk", "4", "--samples", "2", "--out", out, "-t", "2"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json j = results(out);
  EXPECT_EQ(j["task"], "agreement");
  EXPECT_NE(j["scored"].get<std::string>().find("tokens 48..95"), std::string::npos) << j["scored"];
  EXPECT_EQ(j["settings"]["context"], 96);
  const int64_t dense_bytes = 2 * 4 * 2 * 16 * 4 * 96;  // 2 · layers · KV heads · head_dim · f32 · tokens
  for (const char* label : {"dense", "pod:group=1"}) {
    const json& p = policy(j, label);
    SCOPED_TRACE(label);
    EXPECT_EQ(p["top1_agreement"], 1.0);
    EXPECT_LT(p["kl"].get<double>(), 1e-9);
    EXPECT_EQ(p["scored_positions"], 2 * 48);
    EXPECT_EQ(p["kv_bytes"], dense_bytes);
    EXPECT_EQ(p["dense_kv_bytes"], dense_bytes);
    EXPECT_EQ(p["kv_saving"], 0.0);
  }
  EXPECT_EQ(policy(j, "cla")["kv_bytes"], dense_bytes / 2);  // odd layers keep nothing
  for (const char* label : {"pod:group=2:sink=4:recent=16", "streaming:sink=4:recent=16", "cla"}) {
    const json& p = policy(j, label);
    SCOPED_TRACE(label);
    EXPECT_GT(p["kl"].get<double>(), 1e-9);
    EXPECT_LT(p["kv_bytes"].get<int64_t>(), dense_bytes);
    EXPECT_GT(p["kv_saving"].get<double>(), 0.0);
    EXPECT_TRUE(p.contains("perplexity"));
  }
  EXPECT_EQ(policy(j, "streaming:sink=4:recent=16")["options"], json({{"policy", "streaming"}, {"sink", 4}, {"recent", 16}}));
  EXPECT_EQ(j["records"].size(), 10u);
  // The table's KV-bytes column is results.json's kv_bytes, and the same table went to stdout.
  const std::string md = read_text(fs::path(out) / "table.md");
  EXPECT_EQ(md, r.out);
  EXPECT_NE(md.find("| dense | 98,304 (96.00 KiB) | 0.0% | 100.00% | 0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| cla | 49,152 (48.00 KiB) | 50.0% |"), std::string::npos) << md;
  const int64_t streaming = policy(j, "streaming:sink=4:recent=16")["kv_bytes"];
  std::string commas = std::to_string(streaming);
  for (int i = static_cast<int>(commas.size()) - 3; i > 0; i -= 3) commas.insert(i, ",");
  EXPECT_NE(md.find("| streaming:sink=4:recent=16 | " + commas + " ("), std::string::npos) << md;
}

// --no-bos: windows without the BOS, said in results.json and the table; --resume
// refuses to mix a run with BOS and one without, either way round.
TEST_F(EvalCli, NoBosWindowsAndResumeChecksIt) {
  const std::vector<std::string> args = {"eval", "-m", model_, "--task", "perplexity", "--kv", "dense", "--data", text_,
                                         "-c", "64", "--samples", "2", "-t", "2", "--no-progress"};
  auto with = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> a = args;
    a.insert(a.end(), {"--out", out});
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a);
  };
  const std::string bos = (tmp_ / "bos").string(), plain = (tmp_ / "plain").string();
  const auto r1 = with(bos, {});
  ASSERT_EQ(r1.exit_code, 0) << r1;
  const auto r2 = with(plain, {"--no-bos"});
  ASSERT_EQ(r2.exit_code, 0) << r2;
  EXPECT_FALSE(results(bos)["settings"].contains("bos"));
  EXPECT_EQ(results(plain)["settings"]["bos"], false);
  EXPECT_NE(results(plain)["scored"].get<std::string>().find("no BOS before the windows"), std::string::npos);
  EXPECT_NE(r2.out.find("no BOS before the windows"), std::string::npos) << r2.out;
  EXPECT_NE(policy(results(bos), "dense")["perplexity"], policy(results(plain), "dense")["perplexity"]);
  for (const auto& [out, extra] : {std::pair<std::string, std::vector<std::string>>{bos, {"--no-bos", "--resume"}},
                                   {plain, {"--resume"}}}) {
    const auto r = with(out, extra);
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_NE(r.err.find("--resume: the run in " + out + " has bos = "), std::string::npos) << r;
  }
  const auto again = with(plain, {"--no-bos", "--resume"});
  EXPECT_EQ(again.exit_code, 0) << again;
}

TEST_F(EvalCli, PasskeyGridHeatmapAndResume) {
  const std::string out = (tmp_ / "passkey").string();
  const std::vector<std::string> args = {"eval", "-m", model_, "--task", "passkey", "--kv", "dense,streaming:sink=4:recent=16",
                                         "--lengths", "160,256", "--depths", "0,50,100", "--seed", "5", "--out", out};
  const auto first = run(args);
  ASSERT_EQ(first.exit_code, 0) << first;
  EXPECT_NE(first.err.find("100%"), std::string::npos) << first.err;  // the progress bar finished
  const json j = results(out);
  const json& dense = policy(j, "dense");
  EXPECT_EQ(dense["grid"]["depths"], json({0.0, 50.0, 100.0}));
  EXPECT_EQ(dense["grid"]["lengths"], json({160, 256}));
  ASSERT_EQ(dense["grid"]["accuracy"].size(), 3u);      // rows: depths
  ASSERT_EQ(dense["grid"]["accuracy"][0].size(), 2u);   // columns: lengths
  EXPECT_EQ(dense["kv_length"], 256);
  EXPECT_EQ(dense["kv_bytes"], 2 * 4 * 2 * 16 * 4 * 256);
  ASSERT_EQ(j["items"].size(), 6u);
  for (const auto& item : j["items"]) {
    EXPECT_EQ(item["prompt_tokens"], item["length"]);
    EXPECT_EQ(item["answer"].get<std::string>().size(), 5u);
  }
  if (plot::png_available()) {
    EXPECT_TRUE(fs::exists(fs::path(out) / "passkey_heatmap.png"));
  }

  // Interrupt: keep 8 of the 12 records and a line cut short; --resume runs the other 4.
  const fs::path progress = fs::path(out) / "progress.jsonl";
  std::stringstream lines(read_text(progress));
  std::string kept, line;
  for (int i = 0; i < 8 && std::getline(lines, line); ++i) kept += line + "\n";
  write_text(progress, kept + "{\"item\": 5, \"poli");
  std::vector<std::string> resume = args;
  resume.push_back("--resume");
  const auto second = run(resume);
  ASSERT_EQ(second.exit_code, 0) << second;
  EXPECT_NE(second.err.find("resuming: 8"), std::string::npos) << second.err;
  const json k = results(out);
  ASSERT_EQ(k["records"].size(), 12u);
  std::set<std::string> a, b;
  for (const auto& rec : j["records"]) a.insert(rec["policy"].get<std::string>() + std::to_string(rec["item"].get<int>()) + rec["generated"].get<std::string>());
  for (const auto& rec : k["records"]) b.insert(rec["policy"].get<std::string>() + std::to_string(rec["item"].get<int>()) + rec["generated"].get<std::string>());
  EXPECT_EQ(a, b);  // the same answers, each (item, method) once
  EXPECT_EQ(policy(k, "dense")["grid"], dense["grid"]);

  // Resuming with other settings is refused.
  resume[8] = "160";
  const auto third = run(resume);
  EXPECT_EQ(third.exit_code, 1);
  EXPECT_NE(third.err.find("--resume"), std::string::npos) << third.err;
}

TEST_F(EvalCli, NiahAndKvRetrievalRun) {
  const std::string out = (tmp_ / "niah").string();
  auto r = run({"eval", "-m", model_, "--task", "niah", "--kv", "dense,cla", "--data", text_, "--lengths", "200",
                "--depths", "0,100", "--needle", "The password is {answer}.", "--question", "What is the password? It is",
                "--out", out, "--no-progress", "--show-answers"});
  ASSERT_EQ(r.exit_code, 0) << r;
  json j = results(out);
  EXPECT_EQ(j["settings"]["needle"], "The password is {answer}.");
  // --show-answers: a line per prompt and method after the table, with the expected answer and what was generated.
  for (const auto& rec : j["records"]) {
    const json& item = j["items"][rec["item"].get<int>()];
    const std::string line = rec["policy"].get<std::string>();
    EXPECT_NE(r.out.find(": answer " + item["answer"].get<std::string>() + ", generated \""), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\n" + line), std::string::npos) << r.out;
  }
  const std::string table = read_text(fs::path(out) / "table.md");
  EXPECT_EQ(r.out.substr(0, table.size()), table);
  EXPECT_EQ(std::count(r.out.begin() + static_cast<std::ptrdiff_t>(table.size()), r.out.end(), '\n'),
            1 + 4);  // a blank line, then 2 prompts x 2 methods
  EXPECT_EQ(j["items"][0]["prompt_tokens"], 200);
  EXPECT_EQ(j["records"].size(), 4u);
  EXPECT_TRUE(r.err.empty() || r.err.find("[") == std::string::npos) << r.err;  // --no-progress
  r = run({"eval", "-m", model_, "--task", "kv-retrieval", "--kv", "dense", "--lengths", "200", "--depths", "50",
           "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r;
  j = results(out);
  EXPECT_EQ(j["items"][0]["answer"].get<std::string>().size(), 8u);
  EXPECT_LE(j["items"][0]["prompt_tokens"].get<int>(), 200);
}

// model=DIR runs a policy with another model's weights, name= labels it: the
// lane scores what a run of that model itself scores, and differs from -m's.
TEST_F(EvalCli, PolicyWithItsOwnModelRunsThoseWeights) {
  const std::string other = (tmp_ / "other").string();
  auto r = run({"create-model", "--preset", "tiny", "--seed", "2", "--tokenizer",
                (kSourceDir / "tests/fixtures/tokenizers/bpe_llama3/tokenizer.json").string(), "--out", other});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::vector<std::string> window = {"--task", "agreement", "--data", text_, "-c", "96", "--prefill", "48",
                                           "--decode-chunk", "4", "--samples", "2", "-t", "2", "--no-progress"};
  auto eval = [&](const std::string& model, const std::string& kv, const std::string& out) {
    std::vector<std::string> args = {"eval", "-m", model, "--kv", kv, "--out", out};
    args.insert(args.end(), window.begin(), window.end());
    return run(args);
  };
  const std::string both = (tmp_ / "both").string(), alone = (tmp_ / "alone").string();
  r = eval(model_, "dense,dense:model=" + other + ":name=other", both);
  ASSERT_EQ(r.exit_code, 0) << r;
  const json j = results(both);
  const json& mine = policy(j, "other");
  EXPECT_EQ(mine["options"], json({{"policy", "dense"}, {"model", other}}));
  EXPECT_LT(mine["top1_agreement"].get<double>(), 1.0);  // other weights than -m's dense reference
  EXPECT_EQ(policy(j, "dense")["top1_agreement"], 1.0);
  r = eval(other, "dense", alone);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_NEAR(mine["perplexity"].get<double>(), policy(results(alone), "dense")["perplexity"].get<double>(), 1e-9);

  // A model of another shape, a missing folder, a label given twice: one line each.
  const std::string small = (tmp_ / "small").string();
  r = run({"create-model", "--preset", "small", "--tokenizer",
           (kSourceDir / "tests/fixtures/tokenizers/bpe_llama3/tokenizer.json").string(), "--out", small});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::string retokenized = (tmp_ / "retokenized").string();
  fs::copy(other, retokenized);
  write_text(fs::path(retokenized) / "tokenizer.json", read_text(fs::path(other) / "tokenizer.json") + "\n");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"dense,pod:group=2:model=" + small, "a policy's model must have the same shape"},
      {"dense,pod:model=" + small, "model=" + small + " in 'pod:model=" + small + "' has hidden_size"},
      {"dense:model=" + retokenized, "its tokenizer.json differs from the one of -m"},
      {"dense:name=a|b", "may not hold '|'"},
      {"dense:model=" + (tmp_ / "nothere").string(), "no such model directory or file"},
      {"dense,streaming:name=dense", "'dense' is given twice"},
  };
  for (const auto& [kv, message] : bad) {
    r = eval(model_, kv, (tmp_ / "bad").string());
    SCOPED_TRACE(kv);
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST_F(EvalCli, BadInputIsOneLineAndExit1) {
  const std::string out = (tmp_ / "bad").string();
  const std::vector<std::string> base = {"eval", "-m", model_, "--kv", "dense", "--out", out};
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::string short_text = (tmp_ / "short.txt").string();
  write_text(short_text, "Only a few words of text.\n");
  const std::vector<Case> cases = {
      {{"--task", "passkey", "--lengths", "256", "--depths", "0,120"}, "--depths: 120 is outside 0..100"},
      {{"--task", "passkey", "--lengths", "8192"}, "--lengths: 8192 tokens"},
      {{"--task", "agreement", "--data", text_, "-c", "9000"}, "--context: 9000 tokens is longer than the model's context (4096 tokens)"},
      {{"--task", "niah", "--data", short_text, "--lengths", "1000"}, "--data: the haystack holds"},
      {{"--task", "perplexity", "--data", text_, "-c", "4000"}, "--data: the text holds"},
      {{"--task", "summarize"}, "--task: unknown task 'summarize' (known: agreement, perplexity, passkey, niah, kv-retrieval)"},
      {{"--task", "agreement", "--data", (tmp_ / "missing.txt").string()}, "--data " + (tmp_ / "missing.txt").string() + ": cannot open"},
      {{"--task", "passkey", "--kv", "dense:group=2"}, "'group' does not apply to dense"},
      {{"--task", "passkey", "--kv", "pod"}, "--kv pod: no pod.json"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = base;
    args.insert(args.end(), c.args.begin(), c.args.end());
    const auto r = run(args);
    SCOPED_TRACE(c.message);
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

}  // namespace
}  // namespace podkv::clitest
