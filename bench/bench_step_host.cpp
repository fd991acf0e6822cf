// The host's part of a batched decode step, with no forward: Runner::step over
// a backend that computes nothing (reserve, the KV view, commit, the draws
// handed back), for the Llama-3-8B geometry (32 layers, 8 KV heads of 128,
// bf16 entries) with B sequences of 8192 tokens in 64-token pages. On a GPU
// this time comes on top of the kernels every step. The reference measured in
// the same run is the same step with the view's page tables copied again
// every step (a fresh KvViewBuilder, as before tables_version let them be
// kept): the ratio of the two is what keeping them saves.
//   podkv_bench --benchmark_filter=StepHost
#include <benchmark/benchmark.h>

#include <memory>
#include <string>

#include "engine/runner.h"
#include "kv/kv_view_builder.h"

namespace podkv {
namespace {

struct NullPool : KvPool {
  void copy_entries(const EntryCopy*, size_t) override {}
  uint8_t* base() override { return nullptr; }
};

// Forward computes nothing and draws token 1 for every row: only the host's bookkeeping is timed.
struct NullBackend : Backend {
  explicit NullBackend(const Model& m) : model_(m) {}
  std::string name() const override { return "null"; }
  const Model& model() const override { return model_; }
  std::unique_ptr<KvPool> create_pool(KvCache& cache) override {
    auto pool = std::make_unique<NullPool>();
    cache.attach_pool(pool.get());
    return pool;
  }
  void forward(const ForwardStep& step, const KvView&, ForwardOutput& out) override {
    out.logits.clear();
    out.tokens.assign(static_cast<size_t>(step.num_logit_rows), 1);
  }
  void set_layer_observer(LayerObserver) override {}
  bool samples_on_device() const override { return true; }
  const Model& model_;
};

// B sequences of 8192 committed tokens (bookkeeping only), then decode steps of one token each;
// with `fresh_view` a new KvViewBuilder builds the step's view again (the reference).
void step_host(benchmark::State& state, bool fresh_view) {
  const int B = static_cast<int>(state.range(0));
  const int64_t depth = 8192;
  auto model = Model::shapes_only(std::string(PODKV_SOURCE_DIR) + "/configs/llama-3-8b-32k");
  const ModelConfig& c = model->config();
  KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), size_t{96} << 30, 64, KvDType::BF16);
  NullBackend backend(*model);
  Runner runner(backend, cache);
  const SampleRequest greedy;
  Batch batch;
  std::vector<int> seqs;
  std::vector<int64_t> lengths;
  for (int b = 0; b < B; ++b) {
    const int seq = cache.add_sequence();
    for (int64_t end = 256;; end = std::min(depth, end + 256)) {
      cache.reserve(seq, end);
      cache.commit(seq, end);
      if (end == depth) break;
    }
    batch.entries.push_back(BatchEntry{seq, {1}, LogitRows::Last, 0, false, &greedy});
    seqs.push_back(seq);
  }
  BatchResult out;
  for (auto _ : state) {
    if (fresh_view) {
      lengths.clear();
      for (int seq : seqs) lengths.push_back(cache.length(seq) + 1);
      KvViewBuilder builder;
      benchmark::DoNotOptimize(builder.build(cache, nullptr, seqs, lengths).page_indices);
    }
    runner.step(batch, out);
    if (cache.length(seqs[0]) + 1 >= c.max_position_embeddings) state.SkipWithError("context full");
  }
  state.SetItemsProcessed(state.iterations() * B);  // decode tokens
}

void BM_StepHost(benchmark::State& state) { step_host(state, false); }
void BM_StepHost_ViewCopiedEveryStep(benchmark::State& state) { step_host(state, true); }

BENCHMARK(BM_StepHost)->Arg(8)->Arg(64)->Unit(benchmark::kMillisecond)->Iterations(200);
BENCHMARK(BM_StepHost_ViewCopiedEveryStep)->Arg(8)->Arg(64)->Unit(benchmark::kMillisecond)->Iterations(200);

}  // namespace
}  // namespace podkv
