// podkv generate --prompts: a JSONL job run continuously batched gives, line
// by line and in input order, what single runs give; bad files are refused
// before anything runs, with the line number.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_run.h"

namespace podkv::clitest {
namespace {


class CliPrompts : public CliTest {};

TEST_F(CliPrompts, BatchedJobEqualsSingleRuns) {
  const std::vector<nlohmann::json> lines = {
      {{"prompt", "It was a dark and stormy night"}, {"n_predict", 9}},
      {{"ids", {1, 40, 50, 60, 70}}, {"n_predict", 4}},
      {{"prompt", "The old man"}, {"n_predict", 12}, {"stop", "zzz"}},
      {{"prompt", "Once upon a time there was a king who had three daughters"}, {"n_predict", 7}},
      {{"ids", {1, 300}}, {"n_predict", 1}},
      {{"prompt", "She said"}, {"n_predict", 10}, {"temperature", 0.8}, {"seed", 42}, {"top_k", 20}},
  };
  std::string file;
  for (const auto& l : lines) file += l.dump() + "\n";
  write_text(tmp_ / "prompts.jsonl", file);
  for (const std::string policy : {"dense", "pod", "snapkv"}) {
    const CliResult r = run({"generate", "-m", kRefModel.string(), "--prompts", (tmp_ / "prompts.jsonl").string(),
                             "--parallel", "3", "--kv", policy, "--budget", "8", "--recent", "8", "--sink", "2",
                             "--temp", "0", "-t", "1", "--out", (tmp_ / "out.jsonl").string()});
    ASSERT_EQ(r.exit_code, 0) << r;
    std::istringstream out(read_text(tmp_ / "out.jsonl"));
    std::string line;
    size_t i = 0;
    for (; std::getline(out, line); ++i) {
      ASSERT_LT(i, lines.size());
      const auto got = nlohmann::json::parse(line);
      EXPECT_EQ(got.at("index"), i);
      std::vector<std::string> args = {"generate", "-m", kRefModel.string(), "--kv", policy, "--budget", "8",
                                       "--recent", "8", "--sink", "2", "--json", "-t", "1", "-n",
                                       lines[i].at("n_predict").dump()};
      if (lines[i].contains("prompt")) args.insert(args.end(), {"-p", lines[i].at("prompt").get<std::string>()});
      else {
        std::string ids;
        for (const auto& id : lines[i].at("ids")) ids += (ids.empty() ? "" : ",") + id.dump();
        args.insert(args.end(), {"--ids", ids});
      }
      if (!lines[i].contains("temperature")) args.insert(args.end(), {"--temp", "0"});
      for (const char* key : {"temperature", "seed", "top_k"})
        if (lines[i].contains(key)) args.insert(args.end(), {std::string("--") + (std::string(key) == "top_k" ? "top-k" : key), lines[i].at(key).dump()});
      if (lines[i].contains("stop")) args.insert(args.end(), {"--stop", lines[i].at("stop").get<std::string>()});
      const CliResult single = run(args);
      ASSERT_EQ(single.exit_code, 0) << single;
      const auto want = nlohmann::json::parse(single.out);
      EXPECT_EQ(got.at("prompt_ids"), want.at("prompt_ids")) << policy << " line " << i;
      EXPECT_EQ(got.at("generated_ids"), want.at("generated_ids")) << policy << " line " << i;
      EXPECT_EQ(got.at("text"), want.at("text")) << policy << " line " << i;
      EXPECT_EQ(got.at("stop_reason"), want.at("stop_reason")) << policy << " line " << i;
    }
    EXPECT_EQ(i, lines.size()) << policy;
  }
}

TEST_F(CliPrompts, BadFilesAreRefusedWithTheLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"prompt\": \"a\"}\n{\"prompt\": 3}\n", "line 2: \"prompt\" must be a string"},
      {"{\"prompt\": \"a\"}\nnot json\n", "line 2: not valid JSON"},
      {"[1, 2]\n", "line 1: expected a JSON object"},
      {"{\"prompt\": \"a\", \"ids\": [1]}\n", "line 1: give exactly one of"},
      {"{\"ids\": [1, 99999999]}\n", "line 1: \"ids\" must be in"},
      {"{\"prompt\": \"a\", \"n_predict\": -1}\n", "line 1: \"n_predict\" must be in"},
      {"{\"prompt\": \"a\", \"top_p\": 2}\n", "line 1: \"top_p\" must be in (0, 1]"},
      {"{\"prompt\": \"a\", \"stop\": [1]}\n", "line 1: \"stop\" must be a string or a list of strings"},
      {"{\"prompt\": \"a\", \"bogus\": 1}\n", "line 1: unknown field \"bogus\""},
      {"\n\n{\"ids\": []}\n", "line 3: \"ids\" must be a non-empty array"},
      {"", "has no requests"},
  };
  for (const auto& [text, message] : cases) {
    write_text(tmp_ / "bad.jsonl", text);
    const CliResult r = run({"generate", "-m", kRefModel.string(), "--prompts", (tmp_ / "bad.jsonl").string(), "-c", "64"});
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_NE(r.err.find(message), std::string::npos) << message << "\n" << r;
    EXPECT_TRUE(r.out.empty()) << r;
  }
  // A prompt longer than the context, named by its line.
  std::string ids = "1";
  for (int i = 0; i < 70; ++i) ids += ",5";
  write_text(tmp_ / "long.jsonl", "{\"ids\": [1]}\n{\"ids\": [" + ids + "]}\n");
  CliResult r = run({"generate", "-m", kRefModel.string(), "--prompts", (tmp_ / "long.jsonl").string(), "-c", "64"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_NE(r.err.find("long.jsonl line 2: prompt of 71 tokens is longer than the context (-c 64)"), std::string::npos) << r;
  r = run({"generate", "-m", kRefModel.string(), "--prompts", (tmp_ / "missing.jsonl").string()});
  EXPECT_EQ(r.exit_code, 1) << r;
  r = run({"generate", "-m", kRefModel.string(), "-p", "x", "--parallel", "4"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_NE(r.err.find("need --prompts"), std::string::npos) << r;
  write_text(tmp_ / "ok.jsonl", "{\"ids\": [1]}\n");
  r = run({"generate", "-m", kRefModel.string(), "--prompts", (tmp_ / "ok.jsonl").string(), "--parallel", "0"});
  EXPECT_EQ(r.exit_code, 1) << r;
  r = run({"generate", "-m", kRefModel.string(), "--prompts", (tmp_ / "ok.jsonl").string(), "--kv-dtype", "q4"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_NE(r.err.find("--kv-dtype"), std::string::npos) << r;
}

}  // namespace
}  // namespace podkv::clitest
