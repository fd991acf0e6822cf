// The CUDA backend end to end on the HF fixtures (tests/fixtures/models):
// logits against transformers' goldens and the CPU backend, prefill in chunks
// and decode step by step, greedy generation equal to transformers'. Skips
// when built without CUDA or when no GPU is visible (CI). The op-level
// comparison is podkv_test_backend_ops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <unistd.h>

#include "backend/cuda_backend.h"
#include "engine/generate.h"
#include "engine/runner.h"
#include "io/safetensors.h"
#include "kv/kv_cache.h"
#include "kv/pod_config.h"
#include "fixture_models.h"
#include "logit_compare.h"
#include "model/create.h"
#include "model/model.h"
#include "policy/policies.h"

namespace podkv {
namespace {

namespace fs = std::filesystem;

using testutil::fixture_model_names;
const fs::path& kFixtures = testutil::kFixtureModels;

class CudaFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
#if !defined(PODKV_HAVE_CUDA)
    GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)";
#else
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
#endif
  }
};

#if defined(PODKV_HAVE_CUDA)

using testutil::relative_error;

std::vector<int32_t> ids_of(const safetensors::File& f, const std::string& name) {
  const auto* t = f.find(name);
  if (t == nullptr) return {};
  std::vector<int64_t> v(static_cast<size_t>(t->elements()));
  std::memcpy(v.data(), t->data, v.size() * 8);
  return std::vector<int32_t>(v.begin(), v.end());
}

const float* expected_logits(const safetensors::File& f) {
  const auto* t = f.find("logits_f32ref");
  if (t == nullptr) t = f.find("logits");
  return t == nullptr ? nullptr : reinterpret_cast<const float*>(t->data);
}

std::unique_ptr<KvCache> cache_for(const ModelConfig& c, int64_t tokens, KvDType dtype = KvDType::F32) {
  return std::make_unique<KvCache>(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim),
                                   static_cast<size_t>(tokens + 64) * c.dense_kv_bytes_per_token(4) * 2, 16, dtype);
}

// Float32 weights and cache on the GPU: the CPU's arithmetic up to the order of sums.
TEST_P(CudaFixture, LogitsMatchTransformersAndCpu) {
  const fs::path dir = kFixtures / GetParam();
  auto ref = safetensors::File::open((dir / "reference.safetensors").string());
  auto model = Model::load(dir.string());
  const ModelConfig& c = model->config();
  const std::vector<int32_t> ids = ids_of(ref, "input_ids");
  const float* expected = expected_logits(ref);
  ASSERT_NE(expected, nullptr);
  CudaBackendOptions options;
  options.weights = DType::F32;
  CudaBackend gpu(*model, options);
  for (int64_t chunk : {int64_t{1000}, int64_t{37}, int64_t{1}}) {
    std::vector<float> cpu_logits, gpu_logits;
    {
      auto cache = cache_for(c, static_cast<int64_t>(ids.size()));
      Runner runner(*model, *cache);
      runner.set_chunk_size(chunk);
      runner.forward(cache->add_sequence(), ids, true, cpu_logits);
    }
    auto cache = cache_for(c, static_cast<int64_t>(ids.size()));
    Runner runner(gpu, *cache);
    runner.set_chunk_size(chunk);
    runner.forward(cache->add_sequence(), ids, true, gpu_logits);
    ASSERT_EQ(gpu_logits.size(), cpu_logits.size());
    EXPECT_LT(relative_error(gpu_logits.data(), expected, gpu_logits.size()), 1e-4) << GetParam() << " chunk " << chunk;
    EXPECT_LT(relative_error(gpu_logits.data(), cpu_logits.data(), gpu_logits.size()), 1e-5)
        << GetParam() << " chunk " << chunk;
  }
}

// BF16 weights (the default upload) and a bf16 cache: within a few percent of transformers' logits for
// the same bf16-rounded weights (reference_bf16w.safetensors, scripts/fixtures/make_bf16_goldens.py),
// argmax mostly equal. What differs: activations rounded to bf16 in the tensor-core GEMMs and prefill
// attention, bf16 keys and values, the order of sums.
TEST_P(CudaFixture, Bf16WeightsStayClose) {
  const fs::path dir = kFixtures / GetParam();
  auto ref = safetensors::File::open((dir / "reference.safetensors").string());
  auto ref_bf16 = safetensors::File::open((dir / "reference_bf16w.safetensors").string());
  auto model = Model::load(dir.string());
  const ModelConfig& c = model->config();
  const std::vector<int32_t> ids = ids_of(ref, "input_ids");
  const float* expected = expected_logits(ref_bf16);
  ASSERT_NE(expected, nullptr) << GetParam() << ": reference_bf16w.safetensors has no logits";
  CudaBackend gpu(*model);
  auto cache = cache_for(c, static_cast<int64_t>(ids.size()), KvDType::BF16);
  Runner runner(gpu, *cache);
  std::vector<float> logits;
  runner.forward(cache->add_sequence(), ids, true, logits);
  const int64_t vocab = c.vocab_size, tokens = static_cast<int64_t>(ids.size());
  const int64_t agree = testutil::same_argmax(logits.data(), expected, tokens, vocab);
  const double err = relative_error(logits.data(), expected, logits.size());
  std::printf("[ bf16     ] %s: max relative error %.3g, top-1 agreement %lld/%lld\n", GetParam().c_str(), err,
              static_cast<long long>(agree), static_cast<long long>(tokens));
  // Measured on an H200: 2.4e-2 to 6.9e-2, top-1 193 to 198 of 200 (random models' logits are nearly tied).
  EXPECT_LT(err, 8e-2) << GetParam();
  EXPECT_GE(agree, tokens * 95 / 100) << GetParam();
}

// Decode steps of one row with BF16 weights take the decode chain (o, gate | up, down and the next
// layer's q, k, v in one launch, where it applies): the prompt fed one token per step, with the chain
// and without it (the per-launch kernels), each with and without step graphs. The chain's logits
// within float32 rounding of the per-launch kernels' (only the order of sums differs), the graphs'
// equal to the launch-by-launch steps', and against transformers' logits for the bf16-rounded weights
// as Bf16WeightsStayClose bounds the prompt path.
TEST_P(CudaFixture, DecodeChainMatchesThePerLaunchKernels) {
  const fs::path dir = kFixtures / GetParam();
  auto ref = safetensors::File::open((dir / "reference.safetensors").string());
  auto ref_bf16 = safetensors::File::open((dir / "reference_bf16w.safetensors").string());
  auto model = Model::load(dir.string());
  const ModelConfig& c = model->config();
  const std::vector<int32_t> all_ids = ids_of(ref, "input_ids");
  const std::vector<int32_t> ids(all_ids.begin(), all_ids.begin() + std::min<size_t>(all_ids.size(), 24));
  const float* expected = expected_logits(ref_bf16);
  ASSERT_NE(expected, nullptr) << GetParam() << ": reference_bf16w.safetensors has no logits";
  std::vector<float> logits[2][2];  // [chain][graphs]
  for (int chain = 0; chain < 2; ++chain)
    for (int graphs = 0; graphs < 2; ++graphs) {
      CudaBackendOptions options;
      options.graphs = graphs == 1;
      CudaBackend gpu(*model, options);
      gpu.ops().set_decode_fusions(true, false, chain == 1);
      auto cache = cache_for(c, static_cast<int64_t>(ids.size()));
      Runner runner(gpu, *cache);
      runner.set_chunk_size(1);
      runner.forward(cache->add_sequence(), ids, true, logits[chain][graphs]);
      ASSERT_EQ(logits[chain][graphs].size(), ids.size() * static_cast<size_t>(c.vocab_size)) << GetParam();
      // Every fixture's sizes are multiples of 8: with the chain on it must have run (launch by launch
      // every step, with graphs at least the steps that are not replays).
      if (chain == 1) {
        const int64_t steps = graphs == 1 ? 1 : static_cast<int64_t>(ids.size());
        EXPECT_GE(gpu.ops().decode_chain_launches(), steps * c.num_layers) << GetParam();
      } else {
        EXPECT_EQ(gpu.ops().decode_chain_launches(), 0) << GetParam();
      }
    }
  const size_t n = logits[0][0].size();
  EXPECT_LT(relative_error(logits[1][0].data(), logits[0][0].data(), n), 1e-5) << GetParam() << ": chain against none";
  EXPECT_LT(relative_error(logits[1][1].data(), logits[1][0].data(), n), 1e-6) << GetParam() << ": chain, graphs";
  EXPECT_LT(relative_error(logits[0][1].data(), logits[0][0].data(), n), 1e-6) << GetParam() << ": none, graphs";
  EXPECT_LT(relative_error(logits[1][1].data(), expected, n), 8e-2) << GetParam() << ": chain against transformers";
}

// With bf16 KV entries the chain also does the next layer's RoPE and KV write (one launch less per
// layer): the same sums, rotations and bf16 encodings as split_qkv_rope_kv_write, so the logits of a
// prompt fed one token per step equal those of the chain without it (to 1e-6: only the compiler's
// choice of fused multiply-adds in the double rotation may differ), with and without step graphs,
// and every decode step's chain (all but the last layer's) took it.
TEST_P(CudaFixture, DecodeChainRopeMatchesTheSplitKernel) {
  const fs::path dir = kFixtures / GetParam();
  auto ref = safetensors::File::open((dir / "reference.safetensors").string());
  auto model = Model::load(dir.string());
  const ModelConfig& c = model->config();
  const std::vector<int32_t> all_ids = ids_of(ref, "input_ids");
  const std::vector<int32_t> ids(all_ids.begin(), all_ids.begin() + std::min<size_t>(all_ids.size(), 24));
  std::vector<float> logits[2][2];  // [rope][graphs]
  for (int rope = 0; rope < 2; ++rope)
    for (int graphs = 0; graphs < 2; ++graphs) {
      CudaBackendOptions options;
      options.graphs = graphs == 1;
      CudaBackend gpu(*model, options);
      gpu.ops().set_decode_fusions(true, false, true, rope == 1);
      auto cache = cache_for(c, static_cast<int64_t>(ids.size()), KvDType::BF16);
      Runner runner(gpu, *cache);
      runner.set_chunk_size(1);
      runner.forward(cache->add_sequence(), ids, true, logits[rope][graphs]);
      ASSERT_EQ(logits[rope][graphs].size(), ids.size() * static_cast<size_t>(c.vocab_size)) << GetParam();
      // Launch by launch, every step's chains exactly; with graphs at least those of the steps that
      // were not replays (the first step runs launch by launch, then again to be captured).
      // Qwen3's q and k norms come between the projection and RoPE, where the chain has no place for
      // them: its models never take the chain's RoPE.
      const int64_t steps = static_cast<int64_t>(ids.size());
      const int64_t chains = gpu.ops().decode_chain_launches(), ropes = gpu.ops().decode_chain_rope_launches();
      const bool chain_rope = rope == 1 && !c.qk_norm;
      if (graphs == 0) {
        EXPECT_EQ(chains, steps * c.num_layers) << GetParam();
        EXPECT_EQ(ropes, chain_rope ? steps * (c.num_layers - 1) : 0) << GetParam();
      } else {
        EXPECT_GE(chains, c.num_layers) << GetParam();
        EXPECT_EQ(ropes == 0, !chain_rope) << GetParam();
        EXPECT_EQ(ropes * c.num_layers, chain_rope ? chains * (c.num_layers - 1) : 0) << GetParam();
      }
    }
  const size_t n = logits[0][0].size();
  EXPECT_LT(relative_error(logits[1][0].data(), logits[0][0].data(), n), 1e-6) << GetParam() << ": rope against none";
  EXPECT_LT(relative_error(logits[1][1].data(), logits[1][0].data(), n), 1e-6) << GetParam() << ": rope, graphs";
  EXPECT_LT(relative_error(logits[0][1].data(), logits[0][0].data(), n), 1e-6) << GetParam() << ": none, graphs";
}

TEST_P(CudaFixture, GreedyGenerationMatchesTransformers) {
  const fs::path dir = kFixtures / GetParam();
  auto ref = safetensors::File::open((dir / "reference.safetensors").string());
  if (ref.find("greedy_ids") == nullptr) GTEST_SKIP() << "no greedy reference";
  auto model = Model::load(dir.string());
  const std::vector<int32_t> prompt = ids_of(ref, "greedy_prompt");
  const std::vector<int32_t> expected = ids_of(ref, "greedy_ids");
  CudaBackendOptions options;
  options.weights = DType::F32;
  CudaBackend gpu(*model, options);
  auto cache = cache_for(model->config(), static_cast<int64_t>(prompt.size() + expected.size()));
  Runner runner(gpu, *cache);
  GenerateOptions gen;
  gen.max_new_tokens = static_cast<int>(expected.size());
  gen.stop_at_eos = false;
  GenerateResult r = generate(runner, cache->add_sequence(), nullptr, prompt, gen);
  EXPECT_EQ(r.generated_ids, expected) << GetParam();
}

#else

TEST_P(CudaFixture, Skipped) {}

#endif

// Prompt steps on the bf16 prompt path stage the attention output for the o projection: the prefill
// kernels write it in bf16 themselves (attention_staged) instead of float32 that stage_rows then
// rounds; and they read Q in bf16 as the RoPE kernel wrote it (split_qkv_rope_kv_write's prompt form,
// rounded and scaled as the kernels round and scale the float32 q) with no float32 q, k, v written.
// The same bytes, so the same logits bit for bit in the three settings (neither; staged output;
// both), on random bf16 models whose attention takes the tensor-core prefill kernels (the fixtures'
// head_dim 16 does not): head_dim 128 with 4 query heads per KV head (the wgmma kernels on a Hopper
// GPU, mma.sync elsewhere) and head_dim 64 with 2; a prompt of 150 tokens whole and in chunks of 40
// (the later chunks against the cache), dense and PoD (blocks of 3 layers: the anchor's keys for
// distant tokens, a second pass over the tiles).
TEST(CudaPromptPath, StagedAttentionEqualsStagedRows) {
#if !defined(PODKV_HAVE_CUDA)
  GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)";
#else
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  struct Shape {
    int head_dim, heads, kv_heads;
  };
  for (const Shape shape : {Shape{128, 8, 2}, Shape{64, 8, 4}}) {
    ModelConfig c = preset_config("tiny", 300);
    c.head_dim = shape.head_dim, c.num_heads = shape.heads, c.num_kv_heads = shape.kv_heads, c.num_layers = 3;
    c.hidden_size = 256, c.intermediate_size = 512;
    const fs::path dir =
        fs::temp_directory_path() / ("podkv_staged_" + std::to_string(shape.head_dim) + "_" + std::to_string(getpid()));
    create_random_model(c, DType::BF16, 7, 0.05, dir.string());
    auto model = Model::load(dir.string());
    fs::remove_all(dir);
    std::vector<int32_t> ids(150);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % 300);
    for (const bool pod : {false, true})
      for (const int64_t chunk : {int64_t{1000}, int64_t{40}}) {
        const std::string what = "head_dim " + std::to_string(shape.head_dim) + (pod ? ", pod" : ", dense") +
                                 ", chunk " + std::to_string(chunk);
        const KvLayout layout = pod ? pod_kv_layout(c, uniform_pod_config(c.num_layers, c.num_kv_heads, 3, 4, 24))
                                    : KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
        std::vector<float> logits[4];
        int64_t staged[4] = {0, 0, 0, 0}, bf16_q[4] = {0, 0, 0, 0};
        size_t scratch[4] = {0, 0, 0, 0};
        for (int setting = 0; setting < 4; ++setting) {
          CudaBackend gpu(*model);
          gpu.ops().set_attention_staging(setting >= 1);
          gpu.ops().set_prompt_q_bf16(setting >= 2);
          gpu.ops().set_prompt_qkv_bf16(setting == 3);
          KvCache cache(layout, static_cast<size_t>(256) * c.dense_kv_bytes_per_token(2) * 2, 16, KvDType::BF16);
          Runner runner(gpu, cache);
          runner.set_chunk_size(chunk);
          runner.forward(cache.add_sequence(), ids, true, logits[setting]);
          staged[setting] = gpu.ops().staged_attention_launches();
          bf16_q[setting] = gpu.ops().bf16_q_attention_launches();
          scratch[setting] = gpu.activation_bytes();
        }
        ASSERT_EQ(logits[0].size(), ids.size() * static_cast<size_t>(c.vocab_size)) << what;
        EXPECT_TRUE(logits[1] == logits[0]) << what << ": the logits differ with the attention output staged";
        EXPECT_TRUE(logits[2] == logits[0]) << what << ": the logits differ with Q in bf16 from the RoPE kernel";
        const int64_t steps = (static_cast<int64_t>(ids.size()) + chunk - 1) / chunk;
        EXPECT_EQ(staged[0], 0) << what;
        EXPECT_EQ(staged[1], steps * c.num_layers) << what;
        EXPECT_EQ(staged[2], steps * c.num_layers) << what;
        EXPECT_EQ(bf16_q[1], 0) << what;
        EXPECT_EQ(bf16_q[2], steps * c.num_layers) << what;
        // Those steps are lean (CudaBackend::lean_step): no room for float32 q, k, v, the attention
        // output or the MLP's float32 scratch (here about half the float32 q path's activation bytes, the
        // logits of every row asked; 32% for a 4,096-row chunk of the Llama-3-8B shape).
        EXPECT_GT(scratch[0], 0u) << what;
        EXPECT_LT(scratch[2], scratch[0]) << what << ": activation bytes " << scratch[2] << " against " << scratch[0];
        // q | k | v in bf16 (the experiment PODKV_CUDA_PREFILL_QKV_BF16=1): rounded once more, so close
        // to the float32 projection's logits, not equal: within 2% of the largest logit.
        ASSERT_EQ(logits[3].size(), logits[0].size()) << what;
        float largest = 0.0f, worst = 0.0f;
        for (size_t i = 0; i < logits[0].size(); ++i) {
          largest = std::max(largest, std::fabs(logits[0][i]));
          worst = std::max(worst, std::fabs(logits[3][i] - logits[0][i]));
        }
        EXPECT_LE(worst, 0.02f * largest) << what << ": q | k | v in bf16";
      }
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(Models, CudaFixture, ::testing::ValuesIn(fixture_model_names()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CudaFixture);

}  // namespace
}  // namespace podkv
