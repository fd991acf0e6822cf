// Split-KV decode attention that merges its own chunks (attention_decode_fold.cuh: the last block of
// each (row, KV head) to finish combines the blocks' partials, no merge launch) against the separate
// merge kernel, end to end: random bf16 models whose decode attention takes the tensor-core kernel
// (head_dim 128 with 4 query heads per KV head, head_dim 64 with 2, head_dim 128 MQA with 16 query
// heads, so that a unit holds a whole tile of heads), dense and PoD (blocks of 3 layers: the anchor's
// keys for distant tokens, and with tau the anchor's gate, which the folded merge writes, decides
// whether a later layer skips them). Three sequences of different lengths decode together, from
// prompts of 70, 131 and 150 tokens, eight steps; splits of at least 16 keys, so that every row
// reaches several blocks of chunks. The logits within float32 rounding of the separate merge's
// (the same sums taken in two levels), every decode step folded, with and without step graphs.
// Skips when built without CUDA or when no GPU is visible (CI); op-level comparisons against the CPU
// are podkv_test_backend_ops' attention cases (scripts/test_gpu.sh runs them with and without it).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "backend/cuda_backend.h"
#include "backend/cuda_backend_ops.h"
#include "engine/batch.h"
#include "engine/runner.h"
#include "kv/kv_cache.h"
#include "kv/pod_config.h"
#include "logit_compare.h"
#include "model/create.h"
#include "model/model.h"
#include "policy/policies.h"

namespace podkv {
namespace {

namespace fs = std::filesystem;

#if defined(PODKV_HAVE_CUDA)

struct FoldShape {
  int head_dim, heads, kv_heads;
};

// The last logits of each of the three sequences after every decode step (steps x 3 x vocab), and the
// decode attention launches that folded.
struct FoldRun {
  std::vector<float> logits;
  int64_t folded = 0;
};

FoldRun run_batch(const Model& model, const KvLayout& layout, bool fold, bool graphs, float tau) {
  const ModelConfig& c = model.config();
  CudaBackendOptions options;
  options.graphs = graphs;
  CudaBackend gpu(model, options);
  gpu.ops().set_decode_attention(fold, 16);
  KvCache cache(layout, static_cast<size_t>(512) * c.dense_kv_bytes_per_token(2) * 2, 16, KvDType::BF16);
  Runner runner(gpu, cache);
  if (tau < 1.0f) runner.set_tau(tau);
  std::vector<int> seqs;
  std::vector<float> ignored;
  for (const int length : {70, 131, 150}) {
    std::vector<int32_t> prompt(static_cast<size_t>(length));
    for (int i = 0; i < length; ++i) prompt[i] = (i * 37 + 11 * length) % c.vocab_size;
    seqs.push_back(runner.add_sequence());
    runner.forward(seqs.back(), prompt, false, ignored);
  }
  const int64_t before = gpu.ops().folded_decode_attention_launches();
  FoldRun run;
  for (int step = 0; step < 8; ++step) {
    Batch batch;
    for (size_t i = 0; i < seqs.size(); ++i)
      batch.entries.push_back(BatchEntry{seqs[i], {static_cast<int32_t>((step * 13 + 5 * i) % c.vocab_size)}});
    BatchResult result;
    runner.step(batch, result);
    for (size_t i = 0; i < seqs.size(); ++i)
      run.logits.insert(run.logits.end(), result.last_logits(i), result.last_logits(i) + c.vocab_size);
  }
  run.folded = gpu.ops().folded_decode_attention_launches() - before;
  return run;
}

TEST(CudaDecodeFold, FoldedMergeMatchesTheMergeKernel) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  for (const FoldShape shape : {FoldShape{128, 8, 2}, FoldShape{64, 8, 4}, FoldShape{128, 16, 1}}) {
    ModelConfig c = preset_config("tiny", 300);
    c.head_dim = shape.head_dim, c.num_heads = shape.heads, c.num_kv_heads = shape.kv_heads, c.num_layers = 3;
    c.hidden_size = 256, c.intermediate_size = 512;
    const fs::path dir = fs::temp_directory_path() /
                         ("podkv_fold_" + std::to_string(shape.head_dim) + "_" + std::to_string(getpid()));
    create_random_model(c, DType::BF16, 11, 0.05, dir.string());
    auto model = Model::load(dir.string());
    fs::remove_all(dir);
    for (const bool pod : {false, true})
      for (const float tau : {1.0f, 0.5f}) {
        if (!pod && tau < 1.0f) continue;  // tau acts on distant keys from an anchor
        const std::string what = "head_dim " + std::to_string(shape.head_dim) + ", " + std::to_string(shape.heads) +
                                 "/" + std::to_string(shape.kv_heads) + " heads" + (pod ? ", pod" : ", dense") +
                                 (tau < 1.0f ? ", tau 0.5" : "");
        const KvLayout layout = pod ? pod_kv_layout(c, uniform_pod_config(c.num_layers, c.num_kv_heads, 3, 4, 24))
                                    : KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
        const FoldRun merged = run_batch(*model, layout, false, false, tau);
        EXPECT_EQ(merged.folded, 0) << what;
        // Step graphs need tau >= 1 (its skip counts are read back each step).
        for (const bool graphs : {false, true}) {
          if (graphs && tau < 1.0f) continue;
          const FoldRun folded = run_batch(*model, layout, true, graphs, tau);
          ASSERT_EQ(folded.logits.size(), merged.logits.size()) << what;
          EXPECT_LT(testutil::relative_error(folded.logits.data(), merged.logits.data(), merged.logits.size()), 1e-5)
              << what << (graphs ? ", graphs" : "");
          // Launch by launch, every decode step's layers; with graphs at least the steps that were
          // not replays (the first runs launch by launch, then again to be captured).
          if (graphs) EXPECT_GE(folded.folded, c.num_layers) << what;
          else EXPECT_EQ(folded.folded, 8 * c.num_layers) << what;
        }
      }
  }
}

#else

TEST(CudaDecodeFold, FoldedMergeMatchesTheMergeKernel) { GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)"; }

#endif

}  // namespace
}  // namespace podkv
