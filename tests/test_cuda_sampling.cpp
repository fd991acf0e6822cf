// Sampling on the GPU (cuda/sampling.cu through CudaSampler) against the CPU's
// LogitSampler on the same logits and the same requests: greedy, temperature,
// top-k (ties at the boundary), top-p, min-p, the penalties, masked (-inf)
// tokens, flat rows, vocabularies from 7 to 128256 tokens, many rows in one
// launch. The GPU sums fixed-point masses where the CPU sums doubles (and their
// exp may differ in the last bit), so the two could disagree where a draw lands
// within about 1e-7 of a boundary; none of these fixed draws does. Rows the device cannot sample (NaN, +inf, all -inf) come back
// as -1. End to end: generation with a sampling request on a fixture model, the
// device drawing against the host drawing from the same device logits.
// Skips when built without CUDA or when no GPU is visible (CI).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda_backend.h"
#include "backend/cuda_sampler.h"
#include "engine/generate.h"
#include "engine/runner.h"
#include "model/model.h"
#include "sampling/sampler.h"

namespace podkv {
namespace {

#if defined(PODKV_HAVE_CUDA)
constexpr float kInf = std::numeric_limits<float>::infinity();

// Rows of logits of one vocabulary, in kinds that stress the order and the ties.
std::vector<float> make_row(int kind, int32_t vocab, std::mt19937_64& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(vocab));
  for (float& x : row) {
    switch (kind) {
      case 0: x = 3.0f * n(rng); break;                            // a spread distribution
      case 1: x = std::round(2.0f * n(rng)) * 0.5f; break;         // many ties
      case 2: x = u(rng) < 0.3f ? -kInf : 8.0f * n(rng); break;    // masked tokens, peaked
      case 3: x = 1.25f; break;                                    // flat
      default: x = u(rng) < 0.999f ? -kInf : n(rng); break;        // nearly all masked
    }
  }
  if (kind == 4) row[static_cast<size_t>(vocab) / 2] = 0.5f;  // at least one token stays
  return row;
}

std::vector<SamplingParams> param_grid() {
  std::vector<SamplingParams> grid;
  auto add = [&](float temperature, int top_k, float top_p, float min_p, float rp = 1.0f, float presence = 0.0f,
                 float frequency = 0.0f) {
    SamplingParams p;
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.repetition_penalty = rp;
    p.presence_penalty = presence;
    p.frequency_penalty = frequency;
    grid.push_back(p);
  };
  add(0.0f, 0, 1.0f, 0.0f);                    // greedy
  add(0.0f, 0, 1.0f, 0.0f, 1.3f, 0.5f, 0.2f);  // greedy with penalties
  add(1.0f, 0, 1.0f, 0.0f);
  add(0.7f, 0, 0.9f, 0.0f);
  add(0.8f, 40, 1.0f, 0.0f);
  add(1.0f, 40, 0.5f, 0.0f);
  add(1.2f, 0, 1.0f, 0.05f);
  add(1.5f, 0, 0.99f, 0.01f);
  add(1.0f, 1, 1.0f, 0.0f);
  add(1e-3f, 0, 0.95f, 0.0f);
  add(0.9f, 5, 0.8f, 0.1f, 1.3f, 0.5f, 0.2f);
  return grid;
}

TEST(CudaSampling, DrawsTheTokensOfTheCpuSampler) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  CudaSampler device(ops);
  LogitSampler host;
  std::mt19937_64 rng(5);
  int compared = 0;
  for (int32_t vocab : {7, 1000, 32000, 128256}) {
    const std::vector<SamplingParams> grid = param_grid();
    // One launch: every kind x every parameter set x 4 draws.
    std::vector<float> logits;
    std::vector<SampleRequest> requests;
    for (int kind = 0; kind < 5; ++kind) {
      const std::vector<float> row = make_row(kind, vocab, rng);
      for (size_t g = 0; g < grid.size(); ++g) {
        SamplingParams p = grid[g];
        p.seed = 1000 * kind + g;
        Sampler sampler(p);
        // A history touching a few tokens (the prompt: 0..5, the generated: 2, 2, 3).
        std::vector<int32_t> history = {0, 1, 2, 3, 4, 5, 2, 2, 3};
        for (int32_t& t : history) t %= vocab;
        for (int d = 0; d < 4; ++d) {
          requests.push_back(sampler.request(history, 6, vocab));
          logits.insert(logits.end(), row.begin(), row.end());
        }
      }
    }
    const int64_t rows = static_cast<int64_t>(requests.size());
    DeviceBuffer logits_device(ops, logits.size() * sizeof(float));
    logits_device.upload(logits.data(), logits.size() * sizeof(float));
    std::vector<const SampleRequest*> pointers;
    for (const SampleRequest& r : requests) pointers.push_back(&r);
    std::vector<int32_t> tokens(static_cast<size_t>(rows), -2);
    device.sample(logits_device.as<float>(), rows, vocab, pointers.data(), tokens.data());
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t want = host.sample(requests[r], logits.data() + r * vocab, vocab);
      const SamplingParams& p = requests[r].params;
      EXPECT_EQ(tokens[r], want) << "vocab " << vocab << " row " << r << " (kind " << r / (4 * 11) << "): temperature "
                                 << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p << " min_p "
                                 << p.min_p << " u " << requests[r].u;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 4 * 5 * 11 * 4);
}

TEST(CudaSampling, RowsTheDeviceCannotSampleComeBackAsMinusOne) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  CudaSampler device(ops);
  const int32_t vocab = 300;
  std::vector<float> logits(3 * vocab, 0.25f);
  logits[17] = std::nanf("");
  for (int32_t i = 0; i < vocab; ++i) logits[vocab + i] = -kInf;
  logits[2 * vocab + 299] = kInf;
  SampleRequest greedy;
  const SampleRequest* pointers[] = {&greedy, &greedy, &greedy};
  DeviceBuffer buffer(ops, logits.size() * sizeof(float));
  buffer.upload(logits.data(), logits.size() * sizeof(float));
  std::vector<int32_t> tokens(3, 0);
  device.sample(buffer.as<float>(), 3, vocab, pointers, tokens.data());
  EXPECT_EQ(tokens, (std::vector<int32_t>{-1, -1, -1}));
}

// Calls whose rows are all greedy with no penalty take sampling_greedy.cu's argmax over slices of
// the row; the same rows beside one temperature row take sample_rows_kernel. Both against the CPU
// sampler (-1 where it refuses the row: a NaN, +inf, or every logit -inf), twice in a row (the
// per-row tickets left at zero), over vocabularies of one slice, several, and a last slice cut short,
// with maxima tied within and across slices.
TEST(CudaSampling, GreedyRowsTakeTheLowestIdOfTheLargestLogit) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  CudaSampler device(ops);
  LogitSampler host;
  std::mt19937_64 rng(11);
  int compared = 0;
  for (int32_t vocab : {7, 4096, 4097, 12289, 128256}) {
    std::vector<float> logits;
    for (int kind = 0; kind < 5; ++kind) {
      std::vector<float> row = make_row(kind, vocab, rng);
      logits.insert(logits.end(), row.begin(), row.end());
      // The same row with its maximum repeated at a later id, in another slice where there is one.
      const size_t best = static_cast<size_t>(std::max_element(row.begin(), row.end()) - row.begin());
      row[(best + 4100) % static_cast<size_t>(vocab)] = row[best];
      logits.insert(logits.end(), row.begin(), row.end());
    }
    const size_t good_rows = logits.size() / static_cast<size_t>(vocab);
    for (const float bad : {std::nanf(""), kInf, -kInf}) {  // -inf: every logit
      std::vector<float> row = make_row(0, vocab, rng);
      if (bad == -kInf) std::fill(row.begin(), row.end(), -kInf);
      else row[static_cast<size_t>(vocab) - 1] = bad;
      logits.insert(logits.end(), row.begin(), row.end());
    }
    const int64_t rows = static_cast<int64_t>(logits.size()) / vocab;
    std::vector<int32_t> want(static_cast<size_t>(rows), -1);
    SampleRequest greedy;
    for (size_t r = 0; r < good_rows; ++r) want[r] = host.sample(greedy, logits.data() + r * vocab, vocab);
    SamplingParams warm;
    warm.temperature = 0.8f;
    warm.seed = 3;
    const SampleRequest tempered = Sampler(warm).request({}, 0, vocab);
    for (const bool mixed : {false, false, true}) {
      std::vector<float> all = logits;
      std::vector<const SampleRequest*> pointers(static_cast<size_t>(rows), &greedy);
      if (mixed) {  // one temperature row more: the general kernel for every row
        all.insert(all.end(), logits.begin(), logits.begin() + vocab);
        pointers.push_back(&tempered);
      }
      DeviceBuffer buffer(ops, all.size() * sizeof(float));
      buffer.upload(all.data(), all.size() * sizeof(float));
      std::vector<int32_t> tokens(pointers.size(), -2);
      device.sample(buffer.as<float>(), static_cast<int64_t>(pointers.size()), vocab, pointers.data(), tokens.data());
      for (int64_t r = 0; r < rows; ++r, ++compared)
        EXPECT_EQ(tokens[r], want[r]) << "vocab " << vocab << " row " << r << (mixed ? " (general kernel)" : "");
    }
  }
  EXPECT_EQ(compared, 5 * 3 * 13);
}

// Generation through the Runner: the device's draws against the host's from the same device
// logits (CudaBackendOptions::sampling off), and errors reported as on the CPU.
TEST(CudaSampling, GenerateDrawsOnTheDeviceAsOnTheHost) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = std::string(PODKV_SOURCE_DIR) + "/tests/fixtures/models/llama_gqa";
  auto model = Model::load(dir);
  const ModelConfig& c = model->config();
  GenerateOptions options;
  options.max_new_tokens = 24;
  options.stop_at_eos = false;
  options.sampling.temperature = 0.9f;
  options.sampling.top_p = 0.95f;
  options.sampling.top_k = 50;
  options.sampling.repetition_penalty = 1.1f;
  std::vector<int32_t> prompt = {1, 5, 9, 14, 3, 7};
  for (int32_t& t : prompt) t %= c.vocab_size;
  std::vector<std::vector<int32_t>> runs[2];
  for (int on = 0; on < 2; ++on) {
    CudaBackendOptions o;
    o.weights = DType::F32;
    o.sampling = on == 1;
    CudaBackend backend(*model, o);
    ASSERT_EQ(backend.samples_on_device(), on == 1);
    KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), size_t{8} << 20, 16, KvDType::F32);
    Runner runner(backend, cache);
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      options.sampling.seed = seed;
      const int seq = runner.add_sequence();
      runs[on].push_back(generate(runner, seq, nullptr, prompt, options).generated_ids);
      runner.remove_sequence(seq);
    }
  }
  ASSERT_EQ(runs[0].size(), 4u);
  for (size_t i = 0; i < runs[0].size(); ++i) {
    EXPECT_EQ(runs[1][i], runs[0][i]) << "seed " << i + 1;
    EXPECT_EQ(runs[1][i].size(), 24u);
  }
}
#endif

}  // namespace
}  // namespace podkv
