// The training model as a whole (Llama, Qwen2's biases, Qwen3's q/k norms, YaRN): its gradient against finite differences in
// double (dense attention, and PoD with head-wise blocks), and its float
// forward against the inference path (Runner) on the HF fixtures, dense and
// PoD over a paged cache.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/runner.h"
#include "fixture_models.h"
#include "kv/kv_cache.h"
#include "logit_compare.h"
#include "model/model.h"
#include "policy/policies.h"
#include "train/model_train.h"
#include "util/error.h"

namespace podkv::train {
namespace {

namespace fs = std::filesystem;

ModelConfig tiny_config(bool bias, bool tied) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 23, c.hidden_size = 16, c.intermediate_size = 24, c.num_layers = 3;
  c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 4;
  c.attention_bias = bias, c.tie_word_embeddings = tied;
  c.rms_norm_eps = 1e-5, c.max_position_embeddings = 64;
  return c;
}

struct RandomBatch {
  int64_t batch = 2, seq = 10;
  std::vector<int32_t> tokens, targets;
};

RandomBatch random_batch(int vocab, uint32_t seed) {
  RandomBatch b;
  std::mt19937 rng(seed);
  for (int64_t i = 0; i < b.batch * b.seq; ++i) {
    b.tokens.push_back(static_cast<int32_t>(rng() % vocab));
    b.targets.push_back(rng() % 4 == 0 ? -1 : static_cast<int32_t>(rng() % vocab));
  }
  return b;
}

// For a few random elements of every tensor: |numeric - analytic| must stay
// under 1e-6 · max(1e-2, |analytic|) + 1e-9, with central differences of
// ε = 1e-5 on the double model (truncation ~ε², rounding ~1e-16/ε: both < 1e-9).
void check_model_gradient(Transformer<double>& m, const RandomBatch& b) {
  const double scale = 1.0 / 7.0;
  m.zero_grads();
  m.forward_backward(b.tokens.data(), b.targets.data(), b.batch, b.seq, scale);
  const std::vector<double> grads = m.grads();
  auto loss = [&] { return scale * m.forward(b.tokens.data(), b.targets.data(), b.batch, b.seq).loss_sum; };
  std::mt19937 rng(11);
  int checked = 0;
  for (const TensorInfo& t : m.tensors()) {
    double max_abs = 0;
    for (size_t i = 0; i < t.size; ++i) max_abs = std::max(max_abs, std::fabs(grads[t.offset + i]));
    EXPECT_GT(max_abs, 0) << t.name << " has no gradient at all";
    for (int trial = 0; trial < 6; ++trial) {
      const size_t i = t.offset + rng() % t.size;
      double& p = m.params()[i];
      const double keep = p, eps = 1e-5;
      p = keep + eps;
      const double up = loss();
      p = keep - eps;
      const double down = loss();
      p = keep;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(numeric, grads[i], 1e-6 * std::max(1e-2, std::fabs(grads[i])) + 1e-9) << t.name << " element " << i - t.offset;
      ++checked;
    }
  }
  EXPECT_GT(checked, 50);
}

TEST(TrainModel, GradientMatchesFiniteDifferencesDense) {
  for (bool tied : {false, true}) {
    Transformer<double> m(tiny_config(/*bias=*/!tied, tied));
    m.init_random(5, 0.3);
    check_model_gradient(m, random_batch(23, 3));
  }
}

// Head-wise blocks: KV head 0 has blocks {0}, {1, 2}; KV head 1 has {0, 1}, {2}.
// With sink 1 and recent 3 over 10 positions, most keys are distant, so the
// anchors' key projections collect gradient from the layers above them.
TEST(TrainModel, GradientMatchesFiniteDifferencesPod) {
  Transformer<double> m(tiny_config(true, false));
  m.init_random(6, 0.3);
  PodConfig pod;
  pod.sink_tokens = 1, pod.recent_tokens = 3;
  pod.anchors = {{0, 1}, {0, 2}};
  const RandomBatch b = random_batch(23, 4);
  const double dense_loss = m.forward(b.tokens.data(), b.targets.data(), b.batch, b.seq).loss_sum;
  m.set_pod(&pod);
  const double pod_loss = m.forward(b.tokens.data(), b.targets.data(), b.batch, b.seq).loss_sum;
  EXPECT_GT(std::fabs(pod_loss - dense_loss), 1e-6) << "PoD attention should change the loss here";
  check_model_gradient(m, b);
}

// A frozen tensor gets no gradient; the others are unchanged by freezing.
TEST(TrainModel, FrozenTensorsGetNoGradient) {
  Transformer<double> m(tiny_config(false, false));
  m.init_random(7, 0.3);
  const RandomBatch b = random_batch(23, 5);
  m.forward_backward(b.tokens.data(), b.targets.data(), b.batch, b.seq, 1.0);
  const std::vector<double> all = m.grads();
  m.set_trainable(trainable_mask(m.tensors(), "qk"));
  m.zero_grads();
  m.forward_backward(b.tokens.data(), b.targets.data(), b.batch, b.seq, 1.0);
  for (const TensorInfo& t : m.tensors()) {
    const bool qk = t.kind == TensorKind::Wq || t.kind == TensorKind::Wk;
    for (size_t i = t.offset; i < t.offset + t.size; ++i) {
      if (qk) ASSERT_NEAR(m.grads()[i], all[i], 1e-12) << t.name;
      else ASSERT_EQ(m.grads()[i], 0.0) << t.name;
    }
  }
}

std::vector<int32_t> fixture_ids(const fs::path& dir, size_t count) {
  std::ifstream in(dir / "input_ids.txt");
  std::vector<int32_t> ids;
  int64_t id;
  while (ids.size() < count && (in >> id)) ids.push_back(static_cast<int32_t>(id));
  return ids;
}

// Qwen3's per-head q/k norms (their weights trained too) and YaRN's frequencies and attention
// factor (a softmax scale above 1 / sqrt(d)), each in the whole model's gradient.
TEST(TrainModel, GradientMatchesFiniteDifferencesQkNormsAndYarn) {
  ModelConfig qwen3 = tiny_config(false, true);
  qwen3.architecture = "Qwen3ForCausalLM", qwen3.qk_norm = true;
  ModelConfig yarn = tiny_config(true, false);
  yarn.architecture = "Qwen2ForCausalLM";
  yarn.rope_scaling.type = RopeScalingType::Yarn, yarn.rope_scaling.factor = 4;
  yarn.rope_scaling.original_max_position_embeddings = 16;
  ASSERT_GT(attention_score_scale(yarn), 1.0 / std::sqrt(4.0) * 1.2);
  for (const ModelConfig& c : {qwen3, yarn}) {
    SCOPED_TRACE(c.architecture);
    Transformer<double> m(c);
    m.init_random(8, 0.3);
    // Norm weights away from 1, so that a q/k norm that ignored them would show.
    for (const TensorInfo& t : m.tensors())
      if (t.kind == TensorKind::QNorm || t.kind == TensorKind::KNorm)
        for (size_t i = 0; i < t.size; ++i) m.params()[t.offset + i] = 0.6 + 0.1 * static_cast<double>(i % 7);
    check_model_gradient(m, random_batch(23, 5));
  }
}

// The training forward (float) gives the inference Runner's logits, dense and
// PoD (head-wise uniform blocks of 2, small window so most keys are distant).
TEST(TrainModel, ForwardMatchesInferenceRunner) {
  for (const char* name : {"llama_gqa", "qwen2_bias", "llama_mqa_tied", "llama3_rope", "llama_bf16", "qwen3_qk_norm",
                           "qwen2_yarn"}) {
    const fs::path dir = testutil::kFixtureModels / name;
    ASSERT_TRUE(fs::exists(dir)) << dir << " (a committed fixture) is missing";
    auto model = Model::load(dir.string());
    const ModelConfig& c = model->config();
    const std::vector<int32_t> ids = fixture_ids(dir, 96);
    ASSERT_EQ(ids.size(), 96u) << name;
    Transformer<float> t(c);
    t.copy_from(*model);
    std::vector<float> dense_logits;
    for (bool pod : {false, true}) {
      PodConfig cfg = uniform_pod_config(c.num_layers, c.num_kv_heads, 2, 4, 16);
      if (c.num_kv_heads > 1) cfg.anchors[1] = {0};  // head-wise: KV head 1 is one block
      KvPolicyOptions options;
      options.policy = pod ? "pod" : "dense";
      if (pod) options.pod = cfg;
      KvCache cache(make_kv_layout(c, options), 64u << 20, 16);
      Runner runner(*model, cache);
      runner.set_chunk_size(40);
      std::vector<float> expected;
      runner.forward(cache.add_sequence(), ids, true, expected);
      t.set_pod(pod ? &cfg : nullptr);
      std::vector<float> logits(ids.size() * c.vocab_size);
      t.forward(ids.data(), nullptr, 1, static_cast<int64_t>(ids.size()), logits.data());
      EXPECT_LT(testutil::relative_error(logits.data(), expected.data(), logits.size()), 1e-4)
          << name << (pod ? " pod" : " dense");
      if (pod)
        EXPECT_GT(testutil::relative_error(logits.data(), dense_logits.data(), logits.size()), 1e-3)
            << name << ": PoD should change the logits here";
      else dense_logits = logits;
    }
  }
}

}  // namespace
}  // namespace podkv::train
