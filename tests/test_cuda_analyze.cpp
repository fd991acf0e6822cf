// podkv analyze on the CUDA backend: layer observers read host copies of the
// layer's q rows and KV pages (backend/observer_copies.h).
// - Everywhere (the CPU build too): ObserverCopies on the CPU backend, whose
//   "device" is host memory. The copied view holds exactly the pages of the
//   observed layer's streams and of the layers its rules read, byte for byte,
//   with one download per run of consecutive pages and -1 for every other
//   stream (dense, PoD and PoD+SnapKV layouts, f32 and bf16 entries, two
//   sequences per step); the analysis through the copies equals the plain one
//   exactly, and leaves no observer behind.
// - On a GPU (skipped without one or without CUDA): the analysis on cuda with
//   f32 weights and an f32 cache against the CPU's: attention rows and
//   similarities within 1e-4 absolute, the same blocks at every delta that
//   stays 2e-4 away from every similarity; observed prefill and decode steps
//   see the CPU's q and keys (within 1e-4), and with the observer cleared the
//   decode steps (CUDA graphs again) give the CPU's logits.
// - --device cuda without a GPU or CUDA build, an unknown --device or
//   --cuda-weights: one error line, exit 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>

#include "backend/cpu_backend.h"
#include "backend/cpu_backend_ops.h"
#include "backend/cuda_backend.h"
#include "backend/observer_copies.h"
#include "cli_run.h"
#include "engine/runner.h"
#include "kv/kv_cache.h"
#include "kv_test_util.h"
#include "model/model.h"
#include "pod/analyze.h"
#include "pod/grouping.h"
#include "similarity_test_util.h"

namespace podkv {
namespace {

namespace fs = std::filesystem;
using testing::expect_similarity_near;
using testing::Similarity;

// ---------------------------------------------------------------- the copies on the CPU

// CPU ops that count downloads (host memory both sides: a download is a memcpy).
class CountingOps : public CpuBackendOps {
 public:
  void download(void* host, const void* device, size_t bytes) override {
    ++downloads;
    CpuBackendOps::download(host, device, bytes);
  }
  int64_t downloads = 0;
};

// The CPU backend with its observations passed through ObserverCopies as CudaBackend passes them
// (once per layer, every batch entry from one copy): all of it but the GPU.
class CopyingCpuBackend : public Backend {
 public:
  explicit CopyingCpuBackend(const Model& model) : cpu_(model) {}
  std::string name() const override { return "cpu (observer copies)"; }
  const Model& model() const override { return cpu_.model(); }
  std::unique_ptr<KvPool> create_pool(KvCache& cache) override { return cpu_.create_pool(cache); }
  void forward(const ForwardStep& step, const KvView& view, ForwardOutput& out) override {
    step_ = &step;
    view_ = &view;
    cpu_.forward(step, view, out);
  }
  void set_layer_observer(LayerObserver observer) override {
    observer_ = std::move(observer);
    if (!observer_) {
      cpu_.set_layer_observer(nullptr);
      return;
    }
    cpu_.set_layer_observer([this](const LayerObservation& o) {
      if (o.entry != 0) return;  // entry 0's q is the step's first row: the whole step's q follows it
      step_q_ = o.q;
      copies_.observe(ops_, observer_, *step_, *view_, o.layer, o.q, cpu_.model().config().q_dim());
    });
  }

  bool has_observer() const { return static_cast<bool>(observer_); }
  const KvView& device_view() const { return *view_; }  // the step's view over the CPU's pool
  const float* device_q() const { return step_q_; }     // [step rows, q_dim] the CPU's q
  const ForwardStep& step() const { return *step_; }
  ObserverCopies& copies() { return copies_; }
  CountingOps& ops() { return ops_; }

 private:
  CpuBackend cpu_;
  CountingOps ops_;
  ObserverCopies copies_;
  LayerObserver observer_;
  const ForwardStep* step_ = nullptr;
  const KvView* view_ = nullptr;
  const float* step_q_ = nullptr;
};

struct CopyCase {
  std::string policy;
  KvDType dtype;
};
void PrintTo(const CopyCase& c, std::ostream* os) { *os << c.policy << ", " << kv_dtype_name(c.dtype) << " entries"; }

class ObserverCopiesTest : public ::testing::TestWithParam<CopyCase> {};

TEST_P(ObserverCopiesTest, HoldExactlyThePagesTheLayerReads) {
  const CopyCase& param = GetParam();
  auto model = Model::load((clitest::kFixtures / "mistral").string());  // 3 layers, 2 KV heads: PoD blocks {0, 1}, {2}
  const ModelConfig& c = model->config();
  const KvLayout layout = testing::small_policy_layout(c, param.policy, 4, 8, 8, 4, 2);
  KvCache cache(layout, static_cast<size_t>(512) * c.dense_kv_bytes_per_token(4), 16, param.dtype);
  CopyingCpuBackend backend(*model);
  Runner runner(backend, cache);
  runner.set_chunk_size(16);
  int observations = 0, reading_other_layers = 0;
  runner.set_layer_observer([&](const LayerObservation& o) {
    ++observations;
    const KvView& copy = *o.view;
    const KvView& device = backend.device_view();
    const int L = device.num_layers, H = device.num_kv_heads;
    const int64_t page_bytes = device.page_bytes;
    ASSERT_NE(copy.pool, device.pool);
    EXPECT_EQ(copy.page_indptr, device.page_indptr);
    EXPECT_EQ(copy.key_rules, device.key_rules);
    // q: the entry's rows of the step's q.
    const int64_t r0 = backend.step().attention.row_begin[o.entry];
    EXPECT_EQ(0, std::memcmp(o.q, backend.device_q() + r0 * c.q_dim(), o.tokens * c.q_dim() * sizeof(float)));
    // The layers attention of o.layer reads (attention.cpp's source_layer): itself and its rules' sources.
    std::vector<char> read(L, 0);
    read[o.layer] = 1;
    for (int h = 0; h < H; ++h)
      for (const KvRule* rules : {device.key_rules, device.value_rules})
        for (int source : {rules[o.layer * H + h].distant_source, rules[o.layer * H + h].proximal_source})
          if (source >= 0) read[source] = 1;
    if (std::count(read.begin(), read.end(), 1) > 1) ++reading_other_layers;
    std::set<int32_t> pages;
    for (int b = 0; b < device.num_seqs; ++b)
      for (int kind = 0; kind < 4; ++kind)
        for (int l = 0; l < L; ++l)
          for (int h = 0; h < H; ++h) {
            const int64_t s = device.stream(b, kind, l, h);
            for (int64_t i = device.page_indptr[s]; i < device.page_indptr[s + 1]; ++i) {
              const int32_t page = device.page_indices[i];
              if (!read[l] || page < 0) {
                EXPECT_EQ(copy.page_indices[i], -1) << "stream of layer " << l << " kind " << kind;
                continue;
              }
              pages.insert(page);
              ASSERT_GE(copy.page_indices[i], 0);
              EXPECT_EQ(0, std::memcmp(copy.pool + copy.page_indices[i] * page_bytes, device.pool + page * page_bytes,
                                       page_bytes))
                  << "page " << page << " of layer " << l << " kind " << kind << " head " << h;
            }
          }
    const std::vector<int32_t>& copied = backend.copies().copied_pages();
    EXPECT_EQ(std::vector<int32_t>(pages.begin(), pages.end()), copied);
    int64_t runs = 0;
    for (size_t i = 0; i < copied.size(); ++i) runs += i == 0 || copied[i] != copied[i - 1] + 1;
    EXPECT_EQ(backend.copies().downloads(), runs);
  });

  // Two sequences prefilled in chunks, then decode steps of both together.
  const std::vector<int32_t> a = synthetic_calibration_ids(c.vocab_size, 1, 40, 1)[0];
  const std::vector<int32_t> b(a.rbegin(), a.rend());
  std::vector<float> logits;
  const int s0 = runner.add_sequence(), s1 = runner.add_sequence();
  runner.forward(s0, a, false, logits);
  runner.forward(s1, std::vector<int32_t>(b.begin(), b.begin() + 33), false, logits);
  for (int t = 0; t < 3; ++t) {
    Batch batch;
    batch.entries = {BatchEntry{.seq = s0, .tokens = {a[t]}}, BatchEntry{.seq = s1, .tokens = {b[t]}}};
    BatchResult result;
    runner.step(batch, result);
  }
  // 3 + 3 prefill chunks and 3 decode steps of 2 entries, every layer.
  EXPECT_EQ(observations, (3 + 3 + 3 * 2) * c.num_layers);
  if (param.policy.starts_with("pod")) {
    EXPECT_GT(reading_other_layers, 0) << "no layer read its anchor";
  }
  runner.set_layer_observer(nullptr);
}

INSTANTIATE_TEST_SUITE_P(Layouts, ObserverCopiesTest,
                         ::testing::Values(CopyCase{"dense", KvDType::F32}, CopyCase{"pod", KvDType::F32},
                                           CopyCase{"pod", KvDType::BF16}, CopyCase{"pod+snapkv", KvDType::F32}),
                         [](const auto& info) {
                           std::string name = info.param.policy + "_" + kv_dtype_name(info.param.dtype);
                           std::replace(name.begin(), name.end(), '+', '_');
                           return name;
                         });

AnalyzeOptions small_analysis(int seq_len, int last_queries, int64_t chunk) {
  AnalyzeOptions o;
  o.samples = 2;
  o.seq_len = seq_len;
  o.last_queries = last_queries;
  o.sink_tokens = 3;
  o.recent_tokens = seq_len / 5;
  o.chunk = chunk;
  return o;
}

TEST(ObserverCopiesAnalysis, EqualsTheCpuAnalysisExactly) {
  auto model = Model::load((clitest::kFixtures / "llama_gqa").string());
  const AnalyzeOptions o = small_analysis(48, 6, 16);
  const auto sequences = synthetic_calibration_ids(model->config().vocab_size, o.samples, o.seq_len, 1);
  const AnalyzeResult cpu = run_analysis(*model, o, sequences, {});
  CopyingCpuBackend backend(*model);
  AnalyzeRunOptions run;
  run.backend = &backend;
  const AnalyzeResult copied = run_analysis(*model, o, sequences, run);
  ASSERT_TRUE(cpu.complete && copied.complete);
  expect_similarity_near(copied.similarity, cpu.similarity, 0.0);
  EXPECT_EQ(copied.pod.anchors, cpu.pod.anchors);
  EXPECT_FALSE(backend.has_observer()) << "the analysis left its observer on the backend";
  // A backend of another model is refused.
  auto other = Model::load((clitest::kFixtures / "mistral").string());
  CopyingCpuBackend wrong(*other);
  run.backend = &wrong;
  EXPECT_THROW(run_analysis(*model, o, sequences, run), Error);
}

// ---------------------------------------------------------------- on the GPU

class CudaAnalyze : public ::testing::Test {
 protected:
  void SetUp() override {
#if !defined(PODKV_HAVE_CUDA)
    GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)";
#else
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
#endif
  }
};

struct CudaCase {
  std::string fixture;
  int seq_len, last_queries;
  int64_t chunk;
};
void PrintTo(const CudaCase& c, std::ostream* os) {
  *os << c.fixture << ", T " << c.seq_len << ", q " << c.last_queries << ", chunk " << c.chunk;
}

class CudaAnalyzeMatchesCpu : public CudaAnalyze, public ::testing::WithParamInterface<CudaCase> {};

// Float32 weights and cache on the GPU: the CPU's arithmetic up to the order of sums. Fewer than 16
// observed queries take the decode kernels, 16 and more the tiled prefill kernel.
TEST_P(CudaAnalyzeMatchesCpu, SimilarityAndBlocks) {
#if defined(PODKV_HAVE_CUDA)
  const CudaCase& param = GetParam();
  auto model = Model::load((clitest::kFixtures / param.fixture).string());
  const ModelConfig& c = model->config();
  const AnalyzeOptions o = small_analysis(param.seq_len, param.last_queries, param.chunk);
  const auto sequences = synthetic_calibration_ids(c.vocab_size, o.samples, o.seq_len, 1);
  const size_t row_floats = static_cast<size_t>(c.num_heads) * o.last_queries * o.seq_len;

  // Attention rows [H][q][T] of every (sequence, layer), CPU then GPU.
  std::vector<std::vector<float>> cpu_rows;
  {
    LayerSimilarityAnalysis analysis(*model, o);
    analysis.set_attention_hook([&](int, const float* probs) { cpu_rows.emplace_back(probs, probs + row_floats); });
    for (const auto& tokens : sequences) analysis.add_sequence(tokens);
  }
  CudaBackend cuda(*model, CudaBackendOptions{DType::F32});
  size_t hooked = 0;
  double max_row_diff = 0;
  {
    LayerSimilarityAnalysis analysis(*model, o, &cuda);
    analysis.set_attention_hook([&](int, const float* probs) {
      ASSERT_LT(hooked, cpu_rows.size());
      const std::vector<float>& want = cpu_rows[hooked++];
      for (size_t i = 0; i < row_floats; ++i)
        max_row_diff = std::max(max_row_diff, static_cast<double>(std::fabs(probs[i] - want[i])));
    });
    for (const auto& tokens : sequences) analysis.add_sequence(tokens);
  }
  EXPECT_EQ(hooked, cpu_rows.size());
  EXPECT_EQ(hooked, static_cast<size_t>(o.samples) * c.num_layers);
  EXPECT_LT(max_row_diff, 1e-4) << "attention rows of the GPU differ from the CPU's";

  const AnalyzeResult cpu = run_analysis(*model, o, sequences, {});
  AnalyzeRunOptions run;
  run.backend = &cuda;
  const AnalyzeResult gpu = run_analysis(*model, o, sequences, run);
  ASSERT_TRUE(cpu.complete && gpu.complete);
  expect_similarity_near(gpu.similarity, cpu.similarity, 1e-4);
  std::cout << "[ cuda analyze ] " << param.fixture << " T " << o.seq_len << " q " << o.last_queries
            << ": max attention row difference " << max_row_diff << "\n";

  // The same blocks at every delta between two similarities that are more than 4e-4 apart (2e-4
  // from each), and at 0 and 1: every grouping decision the matrices can make with that margin.
  std::vector<double> values = {0.0, 1.0};
  for (const auto& m : cpu.similarity)
    for (size_t x = 0; x < m.size(); ++x)
      for (size_t y = x + 1; y < m.size(); ++y) values.push_back(m[x][y]);
  std::sort(values.begin(), values.end());
  int deltas = 0;
  for (size_t i = 0; i + 1 < values.size(); ++i) {
    if (values[i + 1] - values[i] <= 4e-4) continue;
    const double delta = (values[i] + values[i + 1]) / 2;
    ++deltas;
    EXPECT_EQ(greedy_anchors_per_head(gpu.similarity, delta, 0), greedy_anchors_per_head(cpu.similarity, delta, 0))
        << "delta " << delta;
  }
  EXPECT_GE(deltas, 1);
  std::cout << "[ cuda analyze ] " << deltas << " deltas with the same blocks\n";
  // The run's own blocks (delta 0.5) when no similarity is near it.
  if (std::none_of(values.begin(), values.end(), [](double v) { return std::fabs(v - 0.5) <= 2e-4; })) {
    EXPECT_EQ(gpu.pod.anchors, cpu.pod.anchors);
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaAnalyzeMatchesCpu,
                         ::testing::Values(CudaCase{"llama_gqa", 48, 6, 16}, CudaCase{"mistral", 48, 6, 16},
                                           CudaCase{"llama_mqa_tied", 48, 6, 16}, CudaCase{"qwen2_bias", 48, 6, 16},
                                           CudaCase{"llama_gqa", 160, 16, 64}, CudaCase{"mistral", 160, 24, 64}),
                         [](const auto& info) {
                           return info.param.fixture + "_T" + std::to_string(info.param.seq_len) + "_q" +
                                  std::to_string(info.param.last_queries);
                         });

#if defined(PODKV_HAVE_CUDA)
// What an observer saw of one layer of one step: q rows and the layer's keys of every position so far.
struct Seen {
  int layer = 0;
  int64_t first_pos = 0, tokens = 0;
  std::vector<float> q, keys;
};

LayerObserver record_into(std::vector<Seen>& seen, const ModelConfig& c) {
  return [&seen, &c](const LayerObservation& o) {
    Seen s{o.layer, o.first_pos, o.tokens, std::vector<float>(o.q, o.q + o.tokens * c.q_dim()), {}};
    std::vector<float> key(static_cast<size_t>(c.head_dim));
    for (int h = 0; h < c.num_kv_heads; ++h) {
      const StreamView keys = stream_view(*o.view, o.entry, kKeys, o.layer, h);
      for (int64_t j = 0; j < o.first_pos + o.tokens; ++j) {
        kv_decode(o.view->dtype, keys.at(j), c.head_dim, key.data());
        s.keys.insert(s.keys.end(), key.begin(), key.end());
      }
    }
    seen.push_back(std::move(s));
  };
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, static_cast<double>(std::fabs(a[i] - b[i])));
  return m;
}
#endif

// Decode steps of one shape are what CUDA graphs capture: with an observer every step runs launch
// by launch and is observed; once it is cleared the steps replay graphs again, still right.
TEST_F(CudaAnalyze, ObservedStepsRunLaunchByLaunchAndGraphsComeBack) {
#if defined(PODKV_HAVE_CUDA)
  auto model = Model::load((clitest::kFixtures / "llama_gqa").string());
  const ModelConfig& c = model->config();
  const std::vector<int32_t> ids = synthetic_calibration_ids(c.vocab_size, 1, 40, 1)[0];
  const KvLayout layout = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
  const size_t budget = static_cast<size_t>(256) * c.dense_kv_bytes_per_token(4);
  KvCache cpu_cache(layout, budget), gpu_cache(layout, budget);
  CudaBackend cuda(*model, CudaBackendOptions{DType::F32});
  Runner cpu(*model, cpu_cache), gpu(cuda, gpu_cache);
  std::vector<Seen> cpu_seen, gpu_seen;
  cpu.set_layer_observer(record_into(cpu_seen, c));
  gpu.set_layer_observer(record_into(gpu_seen, c));
  const int cs = cpu.add_sequence(), gs = gpu.add_sequence();
  std::vector<float> cpu_logits, gpu_logits;
  // A 20-token prefill (chunks of 16 and 4 rows), then 6 decode steps.
  cpu.set_chunk_size(16);
  gpu.set_chunk_size(16);
  cpu.forward(cs, std::vector<int32_t>(ids.begin(), ids.begin() + 20), false, cpu_logits);
  gpu.forward(gs, std::vector<int32_t>(ids.begin(), ids.begin() + 20), false, gpu_logits);
  for (int t = 20; t < 26; ++t) {
    cpu.forward(cs, {ids[t]}, false, cpu_logits);
    gpu.forward(gs, {ids[t]}, false, gpu_logits);
  }
  ASSERT_EQ(gpu_seen.size(), static_cast<size_t>(2 + 6) * c.num_layers);
  ASSERT_EQ(gpu_seen.size(), cpu_seen.size());
  for (size_t i = 0; i < gpu_seen.size(); ++i) {
    const Seen &g = gpu_seen[i], &w = cpu_seen[i];
    ASSERT_EQ(g.layer, w.layer);
    ASSERT_EQ(g.first_pos, w.first_pos);
    ASSERT_EQ(g.tokens, w.tokens);
    EXPECT_LT(max_abs_diff(g.q, w.q), 1e-4) << "q of layer " << g.layer << " at position " << g.first_pos;
    EXPECT_LT(max_abs_diff(g.keys, w.keys), 1e-4) << "keys of layer " << g.layer << " at position " << g.first_pos;
  }
  EXPECT_LT(max_abs_diff(gpu_logits, cpu_logits), 1e-4);

  cpu.set_layer_observer(nullptr);
  gpu.set_layer_observer(nullptr);
  for (int t = 26; t < 34; ++t) {
    cpu.forward(cs, {ids[t]}, false, cpu_logits);
    gpu.forward(gs, {ids[t]}, false, gpu_logits);
    EXPECT_LT(max_abs_diff(gpu_logits, cpu_logits), 1e-4) << "logits after position " << t;
  }
  EXPECT_EQ(gpu_seen.size(), static_cast<size_t>(2 + 6) * c.num_layers) << "a cleared observer was called";
#endif
}

// ---------------------------------------------------------------- the command's bad input

class CudaAnalyzeCli : public clitest::CliTest {};

TEST_F(CudaAnalyzeCli, DeviceErrorsAreOneLine) {
  const fs::path out = tmp_ / "pod.json";
  auto expect_one_line_error = [&](const std::vector<std::string>& extra, const std::string& needle) {
    std::vector<std::string> args = {"analyze", "-m", (clitest::kFixtures / "llama_gqa").string(), "--samples", "1",
                                     "--seq-len", "48", "--last-queries", "6", "--sink", "3", "--recent", "9",
                                     "--out", out.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run(args);
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_EQ(r.err.find("error: "), 0u) << r;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r;
    EXPECT_FALSE(fs::exists(out));
  };
  expect_one_line_error({"--device", "tpu"}, "--device: unknown device 'tpu'");
  expect_one_line_error({"--device", "cuda", "--cuda-weights", "f16"}, "--cuda-weights: unknown type 'f16'");
  if (!cuda_device_available()) {
#if defined(PODKV_HAVE_CUDA)
    expect_one_line_error({"--device", "cuda"}, "no CUDA device is visible");
#else
    expect_one_line_error({"--device", "cuda"}, "built without CUDA");
#endif
  }
}

}  // namespace
}  // namespace podkv
