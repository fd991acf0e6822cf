// End-to-end: the podkv CLI on good input, checked against the fixtures'
// Hugging Face references (info, logits, generate --json, greedy ids).
#include <gtest/gtest.h>

#include <cmath>

#include "cli_run.h"
#include "io/safetensors.h"

namespace podkv::clitest {
namespace {

using Cli = CliTest;

const fs::path kModel = kFixtures / "llama_gqa";

void expect_ok(const CliResult& r) {
  EXPECT_EQ(r.signal, 0) << r;
  EXPECT_EQ(r.exit_code, 0) << r;
}

std::vector<int64_t> int_tensor(const safetensors::File& f, const std::string& name) {
  const safetensors::TensorView* t = f.find(name);
  EXPECT_NE(t, nullptr) << name;
  if (t == nullptr) return {};
  std::vector<int64_t> v(static_cast<size_t>(t->elements()));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t->dtype == DType::I64) std::memcpy(&v[i], t->data + 8 * i, 8);
    else {
      int32_t w;
      std::memcpy(&w, t->data + 4 * i, 4);
      v[i] = w;
    }
  }
  return v;
}

std::string join(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) s += std::to_string(id) + ",";
  return s;
}

TEST_F(Cli, InfoJson) {
  const CliResult r = run({"info", "-m", kModel.string(), "--json"});
  expect_ok(r);
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r;
  const auto config = nlohmann::json::parse(read_text(kModel / "config.json"));
  EXPECT_EQ(j.at("architecture"), "LlamaForCausalLM");
  // Parameters: the elements of every tensor the checkpoint holds (meta.json lists them).
  const auto meta = nlohmann::json::parse(read_text(kModel / "meta.json"));
  int64_t params = 0;
  for (const auto& [name, t] : meta.at("checkpoint_tensors").items()) {
    int64_t n = 1;
    for (const auto& d : t.at("shape")) n *= d.get<int64_t>();
    params += n;
  }
  EXPECT_EQ(j.at("parameters").get<int64_t>(), params);
  const int64_t layers = config.at("num_hidden_layers"), kv_heads = config.at("num_key_value_heads"),
                head_dim = config.at("head_dim");
  EXPECT_EQ(j.at("kv_bytes_per_token").get<int64_t>(), 2 * layers * kv_heads * head_dim * 4);
  EXPECT_EQ(j.at("num_kv_heads").get<int64_t>(), kv_heads);
  EXPECT_EQ(j.at("dtype"), "F32");
}

// Qwen3's q/k norms and YaRN in info, and the parameter count of every tensor the checkpoint holds.
TEST_F(Cli, InfoQwenFixtures) {
  const fs::path models = kModel.parent_path();
  for (const char* name : {"qwen3_qk_norm", "qwen2_yarn"}) {
    const CliResult r = run({"info", "-m", (models / name).string(), "--json"});
    expect_ok(r);
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r;
    const bool qwen3 = std::string(name) == "qwen3_qk_norm";
    EXPECT_EQ(j.at("qk_norm"), qwen3) << name;
    EXPECT_EQ(j.at("attention_bias"), !qwen3) << name;
    EXPECT_EQ(j.at("rope_scaling"), qwen3 ? "no scaling" : "yarn x4 (original 256, attention factor 1.139)") << name;
    const auto meta = nlohmann::json::parse(read_text(models / name / "meta.json"));
    int64_t params = 0;
    for (const auto& [tensor, t] : meta.at("checkpoint_tensors").items()) {
      int64_t n = 1;
      for (const auto& d : t.at("shape")) n *= d.get<int64_t>();
      params += n;
    }
    EXPECT_EQ(j.at("parameters").get<int64_t>(), params) << name;
  }
}

TEST_F(Cli, InfoWithConfigOnly) {
  fs::create_directories(tmp_ / "cfg");
  fs::copy_file(kModel / "config.json", tmp_ / "cfg" / "config.json");
  CliResult r = run({"info", "-m", (tmp_ / "cfg").string()});
  expect_ok(r);
  EXPECT_NE(r.out.find("LlamaForCausalLM"), std::string::npos) << r;
  r = run({"info", "-m", (tmp_ / "cfg").string(), "--json"});
  expect_ok(r);
  const auto full = nlohmann::json::parse(run({"info", "-m", kModel.string(), "--json"}).out);
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r;
  EXPECT_EQ(j.at("parameters"), full.at("parameters"));
  EXPECT_EQ(j.at("kv_bytes_per_token"), full.at("kv_bytes_per_token"));
}

// The written logits against transformers' reference.
void expect_reference_logits(const fs::path& out) {
  auto ref = safetensors::File::open((kModel / "reference.safetensors").string());
  auto got = safetensors::File::open(out.string());
  const auto* expected = ref.find("logits");
  const auto* logits = got.find("logits");
  ASSERT_NE(expected, nullptr);
  ASSERT_NE(logits, nullptr);
  ASSERT_EQ(logits->dtype, DType::F32);
  ASSERT_EQ(logits->shape, expected->shape);
  EXPECT_EQ(int_tensor(got, "input_ids"), int_tensor(ref, "input_ids"));
  const int64_t tokens = expected->shape[0], vocab = expected->shape[1];
  const auto* a = reinterpret_cast<const float*>(logits->data);
  const auto* b = reinterpret_cast<const float*>(expected->data);
  for (int64_t t = 0; t < tokens; ++t) {
    double max_diff = 0, max_ref = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(a[t * vocab + v] - b[t * vocab + v])));
      max_ref = std::max(max_ref, static_cast<double>(std::fabs(b[t * vocab + v])));
    }
    ASSERT_LT(max_diff / max_ref, 1e-4) << "position " << t;
  }
}

TEST_F(Cli, LogitsMatchReferenceFromIdsText) {
  const fs::path out = tmp_ / "logits.safetensors";
  const CliResult r = run({"logits", "-m", kModel.string(), "--ids-file", (kModel / "input_ids.txt").string(),
                           "--out", out.string()});
  expect_ok(r);
  expect_reference_logits(out);
}

TEST_F(Cli, LogitsMatchReferenceFromIdsSafetensors) {
  const fs::path out = tmp_ / "logits.safetensors";
  const CliResult r = run({"logits", "-m", kModel.string(), "--ids-file",
                           (kModel / "reference.safetensors").string(), "--out", out.string(), "--chunk", "64"});
  expect_ok(r);
  expect_reference_logits(out);
}

TEST_F(Cli, GenerateJson) {
  const CliResult r = run({"generate", "-m", kModel.string(), "--ids", "1,5,9", "-n", "4", "--json", "--ignore-eos"});
  expect_ok(r);
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r;
  EXPECT_EQ(j.at("prompt_ids"), nlohmann::json({1, 5, 9}));
  ASSERT_TRUE(j.at("generated_ids").is_array());
  EXPECT_EQ(j.at("generated_ids").size(), 4u);
  for (const auto& id : j.at("generated_ids")) EXPECT_TRUE(id.is_number_integer() && id >= 0 && id < 512) << id;
  EXPECT_TRUE(j.at("text").is_string());
  EXPECT_EQ(j.at("stop_reason"), "length");
  ASSERT_TRUE(j.at("timings").is_object());
  for (const char* k : {"prefill_seconds", "decode_seconds", "prefill_tokens_per_s", "decode_tokens_per_s"})
    EXPECT_TRUE(j.at("timings").at(k).is_number()) << k;
}

TEST_F(Cli, GreedyGenerateMatchesTransformers) {
  auto ref = safetensors::File::open((kModel / "reference.safetensors").string());
  const auto prompt = int_tensor(ref, "greedy_prompt");
  const auto expected = int_tensor(ref, "greedy_ids");
  ASSERT_FALSE(prompt.empty());
  ASSERT_EQ(expected.size(), 30u);
  const CliResult r = run({"generate", "-m", kModel.string(), "--ids", join(prompt), "-n", "30", "--temperature", "0",
                           "--ignore-eos", "--json"});
  expect_ok(r);
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r;
  EXPECT_EQ(j.at("prompt_ids").get<std::vector<int64_t>>(), prompt);
  EXPECT_EQ(j.at("generated_ids").get<std::vector<int64_t>>(), expected);
}

// The prompt fed in chunks of 5 tokens (--prefill-chunk): the same greedy ids as transformers.
TEST_F(Cli, GreedyGenerateInSmallPrefillChunksMatchesTransformers) {
  auto ref = safetensors::File::open((kModel / "reference.safetensors").string());
  const auto prompt = int_tensor(ref, "greedy_prompt");
  const auto expected = int_tensor(ref, "greedy_ids");
  ASSERT_GT(prompt.size(), 5u);
  const CliResult r = run({"generate", "-m", kModel.string(), "--ids", join(prompt), "-n", "30", "--temperature", "0",
                           "--ignore-eos", "--json", "--prefill-chunk", "5"});
  expect_ok(r);
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r;
  EXPECT_EQ(j.at("generated_ids").get<std::vector<int64_t>>(), expected);
}

TEST_F(Cli, GeneratePlainPrintsIds) {
  // Without a tokenizer, plain output is the generated ids; the timing line goes to stderr.
  const CliResult r = run({"generate", "-m", kModel.string(), "--ids", "1,5,9", "-n", "3", "--ignore-eos"});
  expect_ok(r);
  std::stringstream s(r.out);
  int id, count = 0;
  while (s >> id) ++count;
  EXPECT_EQ(count, 3) << r;
  EXPECT_NE(r.err.find("decode"), std::string::npos) << r;
}

}  // namespace
}  // namespace podkv::clitest
