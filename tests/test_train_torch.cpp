// One training step against PyTorch / transformers (dense attention), on the
// fixtures of tests/fixtures/train made by scripts/fixtures/make_train_fixture.py:
// the loss, every parameter's gradient, the global gradient norm, and the
// parameters after clipping + one AdamW step.
//
// Tolerances (float32 on both sides, different summation orders):
//   loss: relative 1e-5;  gradients: max |Δ| / max |reference| per tensor 1e-4;
//   parameters after the step: max |Δ| 1e-5 + the eps-sensitivity of Adam's
//   first step, whose update is lr · g / (|g| + eps): an element whose gradient
//   is within float noise of 0 may move differently, so at most 0.1% of the
//   elements of a tensor may differ by more than 1e-5 (and none by more than 2·lr).
#include <gtest/gtest.h>

#include <filesystem>

#include "io/safetensors.h"
#include "model/model.h"
#include "train/adamw.h"
#include "train/model_train.h"
#include "util/error.h"

namespace podkv::train {
namespace {

namespace fs = std::filesystem;

const fs::path kTrainFixtures = fs::path(PODKV_SOURCE_DIR) / "tests" / "fixtures" / "train";

std::vector<float> floats(const safetensors::File& f, const std::string& name) {
  const safetensors::TensorView* t = f.find(name);
  if (t == nullptr) throw Error("reference has no " + name);
  std::vector<float> out(static_cast<size_t>(t->elements()));
  std::memcpy(out.data(), t->data, out.size() * 4);
  return out;
}

std::vector<int64_t> ints(const safetensors::File& f, const std::string& name) {
  const safetensors::TensorView* t = f.find(name);
  if (t == nullptr) throw Error("reference has no " + name);
  std::vector<int64_t> out(static_cast<size_t>(t->elements()));
  std::memcpy(out.data(), t->data, out.size() * 8);
  return out;
}

class TrainTorch : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainTorch, OneStepMatchesPyTorch) {
  const fs::path dir = kTrainFixtures / GetParam();
  ASSERT_TRUE(fs::exists(dir / "reference.safetensors")) << dir << " is missing (a committed fixture)";
  auto ref = safetensors::File::open((dir / "reference.safetensors").string());
  auto model = Model::load(dir.string());
  Transformer<float> t(model->config());
  t.copy_from(*model);

  // transformers shifts the labels: position s predicts labels[s + 1]; -100 counts nothing.
  const std::vector<int64_t> ids = ints(ref, "input_ids"), labels = ints(ref, "labels");
  const int64_t batch = 2, seq = static_cast<int64_t>(ids.size()) / batch;
  std::vector<int32_t> tokens(ids.begin(), ids.end()), targets(ids.size(), -1);
  int64_t count = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s + 1 < seq; ++s) {
      const int64_t label = labels[b * seq + s + 1];
      targets[b * seq + s] = label < 0 ? -1 : static_cast<int32_t>(label);
      count += label >= 0;
    }
  t.zero_grads();
  const LossStats stats = t.forward_backward(tokens.data(), targets.data(), batch, seq, 1.0 / static_cast<double>(count));
  const double ref_loss = floats(ref, "loss")[0];
  EXPECT_NEAR(stats.mean(), ref_loss, 1e-5 * ref_loss);

  double worst_gradient = 0;
  for (const TensorInfo& info : t.tensors()) {
    const std::vector<float> g = floats(ref, "grad." + info.name);
    ASSERT_EQ(g.size(), info.size) << info.name;
    double max_diff = 0, max_ref = 0;
    for (size_t i = 0; i < info.size; ++i) {
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(t.grads()[info.offset + i] - g[i])));
      max_ref = std::max(max_ref, static_cast<double>(std::fabs(g[i])));
    }
    EXPECT_LT(max_diff / max_ref, 1e-4) << info.name;
    worst_gradient = std::max(worst_gradient, max_diff / max_ref);
  }
  std::printf("%s: loss %.7f (transformers %.7f), worst gradient error %.2e\n", GetParam().c_str(), stats.mean(),
              ref_loss, worst_gradient);

  // clip_grad_norm_(0.5) + AdamW(lr 1e-2, betas (0.9, 0.95), eps 1e-8, decay 0.1 on matrices).
  std::vector<ParamRange> ranges;
  for (const TensorInfo& info : t.tensors()) ranges.push_back({info.offset, info.size, info.decay});
  const double norm = clip_by_global_norm(t.grads().data(), ranges, 0.5);
  EXPECT_NEAR(norm, floats(ref, "grad_norm")[0], 1e-5 * norm);
  AdamWOptions options;
  options.beta1 = 0.9, options.beta2 = 0.95, options.eps = 1e-8, options.weight_decay = 0.1;
  AdamW opt(t.params().size(), options);
  opt.step(t.params().data(), t.grads().data(), ranges, 1e-2);
  double worst_param = 0;
  size_t total_off = 0;
  for (const TensorInfo& info : t.tensors()) {
    const std::vector<float> after = floats(ref, "after." + info.name);
    size_t off = 0;
    double worst = 0;
    for (size_t i = 0; i < info.size; ++i) {
      const double diff = std::fabs(t.params()[info.offset + i] - after[i]);
      worst = std::max(worst, diff);
      off += diff > 1e-5;
    }
    EXPECT_LE(off, info.size / 1000) << info.name << ": " << off << " elements differ by > 1e-5";
    EXPECT_LT(worst, 2e-2) << info.name;
    worst_param = std::max(worst_param, worst);
    total_off += off;
  }
  std::printf("%s: after one AdamW step, largest parameter difference %.2e, %zu elements beyond 1e-5\n",
              GetParam().c_str(), worst_param, total_off);
}

INSTANTIATE_TEST_SUITE_P(Train, TrainTorch, ::testing::Values("llama_gqa", "llama_mqa_tied"));

}  // namespace
}  // namespace podkv::train
