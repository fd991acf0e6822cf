// podkv's GGUF files against llama.cpp's own forward pass: tests/fixtures/llamacpp/logits.safetensors
// holds the logits llama.cpp (the prebuilt libllama of npm's @node-llama-cpp/linux-x64, CPU, f32 KV
// cache) computes for the first input ids of fixtures converted by `podkv convert --type f32`, one F32
// tensor [positions, vocab] per fixture name: llama_gqa (GGUF architecture llama), qwen2_bias (qwen2),
// qwen3_qk_norm (qwen3) and qwen2_yarn (qwen2, YaRN rope scaling), written by scripts/fixtures/make_llamacpp_logits.sh, which also checks
// them against the transformers goldens (measured 2.3e-6 and 2.5e-6). The same fixture exported by
// export_gguf and read back by Model::load must give the same logits: relative error (max|Δ| /
// max|ref|) below 1e-4. An independent reader catches what a podkv-only round trip cannot: a file
// that podkv writes and reads back consistently but that means something else to llama.cpp (Q/K row
// order against the architecture's RoPE, biases, q/k norms, metadata keys).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "convert/gguf_export.h"
#include "engine/runner.h"
#include "io/safetensors.h"
#include "kv/kv_cache.h"
#include "fixture_models.h"
#include "logit_compare.h"
#include "model/model.h"
#include "util/error.h"

namespace podkv {
namespace {

namespace fs = std::filesystem;

const fs::path kLlamaCppLogits = fs::path(PODKV_SOURCE_DIR) / "tests" / "fixtures" / "llamacpp" / "logits.safetensors";

TEST(GgufLlamaCpp, ReferenceHoldsEveryFixture) {
  ASSERT_TRUE(fs::exists(kLlamaCppLogits)) << kLlamaCppLogits << " (a committed fixture) is missing";
  const auto file = safetensors::File::open(kLlamaCppLogits.string());
  std::vector<std::string> expected = {"llama_gqa", "qwen2_bias"};
  for (const char* name : {"qwen3_qk_norm", "qwen2_yarn"})
    if (fs::exists(testutil::kFixtureModels / name)) expected.push_back(name);
  for (const std::string& name : expected)
    EXPECT_NE(file.find(name), nullptr) << name << " is not in " << kLlamaCppLogits
                                        << " (rerun scripts/fixtures/make_llamacpp_logits.sh)";
}

TEST(GgufLlamaCpp, LogitsEqualLlamaCpps) {
  ASSERT_TRUE(fs::exists(kLlamaCppLogits)) << kLlamaCppLogits << " (a committed fixture) is missing";
  const auto file = safetensors::File::open(kLlamaCppLogits.string());
  ASSERT_FALSE(file.tensors().empty()) << kLlamaCppLogits;
  const fs::path tmp = fs::temp_directory_path() / ("podkv_gguf_llamacpp_" + std::to_string(::getpid()) + ".gguf");
  for (const auto& [name, expected] : file.tensors()) {
    SCOPED_TRACE(name);
    const fs::path dir = testutil::kFixtureModels / name;
    ASSERT_TRUE(fs::exists(dir)) << dir << ": no fixture of that name";
    ASSERT_EQ(expected.dtype, DType::F32);
    ASSERT_EQ(expected.shape.size(), 2u);
    auto hf = Model::load(dir.string());
    const int64_t positions = expected.shape[0], vocab = hf->config().vocab_size;
    ASSERT_EQ(expected.shape[1], vocab);
    auto ids = testutil::fixture_input_ids(dir);
    ASSERT_GE(static_cast<int64_t>(ids.size()), positions);
    ids.resize(static_cast<size_t>(positions));

    GgufExportOptions opts;
    opts.type = GgufExportType::F32;
    export_gguf(*hf, tmp.string(), opts);
    auto gg = Model::load(tmp.string());
    fs::remove(tmp);
    EXPECT_EQ(gg->config().architecture, hf->config().architecture);
    const std::vector<float> got = testutil::prompt_logits(*gg, ids);
    ASSERT_EQ(got.size(), static_cast<size_t>(positions * vocab));
    const auto* ref = reinterpret_cast<const float*>(expected.data);
    const double err = testutil::relative_error(got.data(), ref, got.size());
    std::printf("[ gguf vs llama.cpp ] %-14s %lld positions, rel err %.3g, argmax %lld/%lld\n", name.c_str(),
                static_cast<long long>(positions), err,
                static_cast<long long>(testutil::same_argmax(got.data(), ref, positions, vocab)),
                static_cast<long long>(positions));
    EXPECT_LT(err, 1e-4);
  }
}

}  // namespace
}  // namespace podkv
