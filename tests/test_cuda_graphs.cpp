// The CUDA backend's step graphs, kept per step shape: decode steps whose
// batch changes size and comes back (as a server's does when requests come
// and go) replay the graph captured for each size, and give the very logits of
// a backend that runs every step launch by launch. Skips when built without
// CUDA or when no GPU is visible (CI).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backend/cuda_backend.h"
#include "engine/runner.h"
#include "model/model.h"

namespace podkv {
namespace {

#if defined(PODKV_HAVE_CUDA)
// Logits of every decode step of the script, on a backend with or without graphs.
std::vector<std::vector<float>> run_script(const Model& model, bool graphs, const std::vector<int>& batch_sizes) {
  const ModelConfig& c = model.config();
  CudaBackendOptions o;
  o.weights = DType::F32;
  o.graphs = graphs;
  CudaBackend backend(model, o);
  KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), size_t{16} << 20, 16, KvDType::F32);
  Runner runner(backend, cache);
  std::vector<int> seqs;
  std::vector<float> logits;
  for (int s = 0; s < 3; ++s) {
    seqs.push_back(runner.add_sequence());
    std::vector<int32_t> prompt;
    for (int t = 0; t < 5 + 7 * s; ++t) prompt.push_back((3 + 11 * t + s) % c.vocab_size);
    runner.forward(seqs.back(), prompt, false, logits);
  }
  std::vector<std::vector<float>> out;
  BatchResult result;
  for (size_t i = 0; i < batch_sizes.size(); ++i) {
    Batch batch;
    for (int b = 0; b < batch_sizes[i]; ++b)
      batch.entries.push_back(BatchEntry{seqs[b], {static_cast<int32_t>((7 * i + b) % c.vocab_size)}, LogitRows::Last, 0,
                                         false});
    runner.step(batch, result);
    out.push_back(result.logits);
  }
  return out;
}

TEST(CudaGraphs, StepsOfChangingBatchSizeReplayTheirGraphs) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  auto model = Model::load(std::string(PODKV_SOURCE_DIR) + "/tests/fixtures/models/llama_gqa");
  // Each size twice in a row is captured; later steps of that size replay it from the cache.
  const std::vector<int> sizes = {1, 1, 1, 2, 2, 2, 3, 3, 1, 1, 2, 3, 1, 2, 2, 3, 3};
  const auto launched = run_script(*model, false, sizes);
  const auto replayed = run_script(*model, true, sizes);
  ASSERT_EQ(launched.size(), replayed.size());
  for (size_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(replayed[i], launched[i]) << "step " << i << " (batch " << sizes[i] << ")";
}
#endif

}  // namespace
}  // namespace podkv
