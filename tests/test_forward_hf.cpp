// Logits and greedy generation against Hugging Face transformers, on the small
// random models of tests/fixtures/models (made by
// scripts/fixtures/make_model_fixtures.py; see its header for what each covers).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "kv/kv_cache.h"
#include "engine/runner.h"
#include "engine/generate.h"
#include "fixture_models.h"
#include "logit_compare.h"
#include "model/model.h"

namespace podkv {
namespace {

namespace fs = std::filesystem;

using testutil::fixture_model_names;

std::vector<int64_t> int_tensor(const safetensors::File& f, const std::string& name) {
  const auto* t = f.find(name);
  EXPECT_NE(t, nullptr) << name;
  if (t == nullptr) return {};
  std::vector<int64_t> out(static_cast<size_t>(t->elements()));
  std::memcpy(out.data(), t->data, out.size() * 8);
  return out;
}

const float* float_tensor(const safetensors::File& f, const std::string& name) {
  const auto* t = f.find(name);
  return t == nullptr ? nullptr : reinterpret_cast<const float*>(t->data);
}

std::unique_ptr<KvCache> hf_cache_for(const ModelConfig& c, int64_t tokens) {
  return std::make_unique<KvCache>(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim),
                                   static_cast<size_t>(tokens + 64) * c.dense_kv_bytes_per_token(4) * 2, 16);
}

using testutil::relative_error;

class HfFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixture, LogitsMatchTransformers) {
  const fs::path dir = testutil::kFixtureModels / GetParam();
  auto ref = safetensors::File::open((dir / "reference.safetensors").string());
  auto model = Model::load(dir.string());
  const ModelConfig& c = model->config();
  const auto ids64 = int_tensor(ref, "input_ids");
  std::vector<int32_t> ids(ids64.begin(), ids64.end());
  // Float32 reference: from float32 weights, or from the low-precision weights widened.
  const float* expected = float_tensor(ref, "logits_f32ref");
  if (expected == nullptr) expected = float_tensor(ref, "logits");
  ASSERT_NE(expected, nullptr);

  for (int64_t chunk : {int64_t{1000}, int64_t{37}}) {
    auto cache = hf_cache_for(c, static_cast<int64_t>(ids.size()));
    Runner runner(*model, *cache);
    runner.set_chunk_size(chunk);
    std::vector<float> logits;
    runner.forward(cache->add_sequence(), ids, true, logits);
    const double err = relative_error(logits.data(), expected, logits.size());
    EXPECT_LT(err, 1e-4) << GetParam() << " chunk " << chunk;
  }
}

TEST_P(HfFixture, DecodeStepByStepMatchesPrefill) {
  const fs::path dir = testutil::kFixtureModels / GetParam();
  auto ref = safetensors::File::open((dir / "reference.safetensors").string());
  auto model = Model::load(dir.string());
  const auto ids64 = int_tensor(ref, "input_ids");
  std::vector<int32_t> ids(ids64.begin(), ids64.begin() + std::min<size_t>(ids64.size(), 48));
  const float* expected = float_tensor(ref, "logits_f32ref");
  if (expected == nullptr) expected = float_tensor(ref, "logits");
  auto cache = hf_cache_for(model->config(), static_cast<int64_t>(ids.size()));
  Runner runner(*model, *cache);
  const int seq = cache->add_sequence();
  std::vector<float> logits;
  const int vocab = model->config().vocab_size;
  for (size_t t = 0; t < ids.size(); ++t) {
    runner.forward(seq, {ids[t]}, false, logits);
    EXPECT_LT(relative_error(logits.data(), expected + t * vocab, vocab), 1e-4) << GetParam() << " position " << t;
  }
}

TEST_P(HfFixture, GreedyGenerationMatchesTransformers) {
  const fs::path dir = testutil::kFixtureModels / GetParam();
  auto ref = safetensors::File::open((dir / "reference.safetensors").string());
  ASSERT_NE(ref.find("greedy_ids"), nullptr) << "no greedy reference in the committed fixture";
  auto model = Model::load(dir.string());
  const auto prompt64 = int_tensor(ref, "greedy_prompt");
  const auto expected = int_tensor(ref, "greedy_ids");
  auto cache = hf_cache_for(model->config(), static_cast<int64_t>(prompt64.size() + expected.size()));
  Runner runner(*model, *cache);
  GenerateOptions options;
  options.max_new_tokens = static_cast<int>(expected.size());
  options.stop_at_eos = false;
  GenerateResult r = generate(runner, cache->add_sequence(), nullptr, std::vector<int32_t>(prompt64.begin(), prompt64.end()), options);
  EXPECT_EQ(std::vector<int64_t>(r.generated_ids.begin(), r.generated_ids.end()), expected) << GetParam();
}

// A config written back (config_to_hf_json, as train, adapt and create-model save it) and read again
// keeps what the forward depends on: Qwen3's q/k norms, YaRN's frequencies and attention factor.
TEST(HfConfig, WrittenConfigKeepsQkNormsAndYarn) {
  for (const char* name : {"qwen3_qk_norm", "qwen2_yarn", "llama3_rope", "llama_linear_rope"}) {
    const fs::path path = testutil::kFixtureModels / name / "config.json";
    ASSERT_TRUE(fs::exists(path)) << path << " (a committed fixture) is missing";
    const ModelConfig a = load_hf_config(path.string());
    const ModelConfig b = parse_hf_config(config_to_hf_json(a), "written");
    EXPECT_EQ(b.architecture, a.architecture) << name;
    EXPECT_EQ(b.qk_norm, a.qk_norm) << name;
    EXPECT_EQ(b.rope_scaling.type, a.rope_scaling.type) << name;
    EXPECT_EQ(rope_inverse_frequencies(b), rope_inverse_frequencies(a)) << name;
    EXPECT_EQ(attention_score_scale(b), attention_score_scale(a)) << name;
  }
  // The fixtures' own settings: what transformers computed for them (make_model_fixtures.py checks it).
  const ModelConfig yarn = load_hf_config((testutil::kFixtureModels / "qwen2_yarn" / "config.json").string());
  EXPECT_NEAR(rope_attention_factor(yarn), 0.1 * std::log(4.0) + 1.0, 1e-12);
  EXPECT_TRUE(load_hf_config((testutil::kFixtureModels / "qwen3_qk_norm" / "config.json").string()).qk_norm);
}

INSTANTIATE_TEST_SUITE_P(Models, HfFixture, ::testing::ValuesIn(fixture_model_names()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HfFixture);

}  // namespace
}  // namespace podkv
