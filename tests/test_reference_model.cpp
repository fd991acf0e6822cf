// The shipped reference model (models/podkv-ref, trained from scratch by
// `podkv train`) is really trained: on an English passage it predicts far
// better than chance, and its shipped pod.json (from `podkv analyze`) loads,
// saves KV bytes and keeps the next-token predictions close to dense.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "engine/runner.h"
#include "kv/kv_cache.h"
#include "policy/policies.h"
#include "tokenizer/tokenizer.h"

namespace podkv {
namespace {

const std::filesystem::path kRef = std::filesystem::path(PODKV_SOURCE_DIR) / "models" / "podkv-ref";

const char* kPassage =
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
    "was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything "
    "before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the "
    "other way. There were a king with a large jaw and a queen with a plain face, on the throne of England; "
    "there were a king with a large jaw and a queen with a fair face, on the throne of France. In both "
    "countries it was clearer than crystal to the lords of the State preserves of loaves and fishes, that "
    "things in general were settled for ever.";

struct Scored {
  double nll = 0;                // mean over predicted tokens, nats
  std::vector<int32_t> argmax;   // per position
  size_t kv_bytes = 0;
};

Scored score(const Model& model, const KvLayout& layout, const std::vector<int32_t>& ids) {
  KvCache cache(layout, size_t{64} << 20);
  Runner runner(model, cache);
  runner.set_chunk_size(64);  // several chunks: the window moves during the prefill
  const int seq = cache.add_sequence();
  std::vector<float> logits;
  runner.forward(seq, ids, true, logits);
  const int64_t vocab = model.config().vocab_size;
  Scored s;
  for (size_t t = 0; t + 1 < ids.size(); ++t) {
    const float* row = &logits[t * vocab];
    const float m = *std::max_element(row, row + vocab);
    double total = 0;
    for (int64_t v = 0; v < vocab; ++v) total += std::exp(static_cast<double>(row[v] - m));
    s.nll += -(row[ids[t + 1]] - m - std::log(total));
    s.argmax.push_back(static_cast<int32_t>(std::max_element(row, row + vocab) - row));
  }
  s.nll /= static_cast<double>(ids.size() - 1);
  s.kv_bytes = cache.bytes_reserved(seq);
  return s;
}

TEST(ReferenceModel, PredictsEnglishAndRunsWithItsPodConfig) {
  ASSERT_TRUE(std::filesystem::exists(kRef / "model.safetensors")) << "the committed " << kRef << " is missing";
  auto model = Model::load(kRef.string());
  auto tokenizer = load_tokenizer(kRef.string());
  const std::vector<int32_t> ids = tokenizer->encode(kPassage, true);
  ASSERT_GT(ids.size(), 200u);
  const ModelConfig& c = model->config();
  const Scored dense = score(*model, KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), ids);
  // Chance is ln(1007) = 6.9 nats; the model was trained to ~3.6 on held-out books.
  EXPECT_LT(dense.nll, 4.5) << "the shipped model does not look trained";

  const PodConfig pod = load_pod_config((kRef / "pod.json").string(), c.num_layers, c.num_kv_heads);
  PodConfig small_window = pod;
  small_window.recent_tokens = 32;  // so that distant tokens exist in this passage
  const Scored shared = score(*model, pod_kv_layout(c, small_window), ids);
  EXPECT_LT(shared.kv_bytes, dense.kv_bytes);
  int agree = 0;
  for (size_t i = 0; i < dense.argmax.size(); ++i) agree += dense.argmax[i] == shared.argmax[i];
  EXPECT_GT(static_cast<double>(agree) / dense.argmax.size(), 0.9);
  EXPECT_LT(shared.nll, dense.nll + 0.1);
}

}  // namespace
}  // namespace podkv
