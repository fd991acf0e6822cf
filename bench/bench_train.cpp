// Training throughput on the CPU (float32) next to the machine's FLOP rate, in
// one binary so the ratio comes from the same run:
//   podkv_bench --benchmark_filter='TrainStep|Sgemm'
// BM_TrainStep/<preset>/<seq>: one optimiser step (forward, backward, AdamW)
// of a random model of the preset's shape (vocab 1007, batch 4); counters give
// tokens/s and GFLOP/s, counting 6 FLOPs per matrix parameter per token (the
// forward's multiply-add twice over, and the backward's two products) plus the
// causal attention products (QKᵀ and PV: 2 · 2 · L · H · d · (seq + 1) / 2
// per token forward, three times that in all). BM_Sgemm: OpenBLAS sgemm on
// 1024³, the FLOP rate the same threads reach on a large matrix product;
// fraction = GFLOP/s of TrainStep ÷ that of Sgemm. Real time (multithreaded).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "model/create.h"
#include "ops/matmul.h"
#include "train/adamw.h"
#include "train/model_train.h"
#include "train/ops.h"

namespace {

using namespace podkv;
using namespace podkv::train;

double train_flops_per_token(const ModelConfig& c, int64_t seq) {
  const double h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
  const double per_layer = h * q * 2 + h * kv * 2 + 3 * h * inter;
  const double matrix_params = c.num_layers * per_layer + h * c.vocab_size;  // the embedding lookup is free
  const double attention = 2.0 * 2.0 * c.num_layers * q * (static_cast<double>(seq) + 1) / 2;
  return 3.0 * (2.0 * matrix_params + attention);
}

void BM_TrainStep(benchmark::State& state, const char* preset) {
  const int64_t seq = state.range(0), batch = 4;
  const ModelConfig c = preset_config(preset, 1007);
  Transformer<float> model(c);
  model.init_random(1, 0.02);
  AdamW opt(model.params().size(), AdamWOptions{});
  std::vector<ParamRange> ranges;
  for (const TensorInfo& t : model.tensors()) ranges.push_back({t.offset, t.size, t.decay});
  std::mt19937 rng(1);
  std::vector<int32_t> tokens(batch * seq), targets(batch * seq);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % 1007);
  for (auto& t : targets) t = static_cast<int32_t>(rng() % 1007);
  model.forward_backward(tokens.data(), targets.data(), batch, seq, 1.0);  // warm-up: activations allocated
  for (auto _ : state) {
    model.zero_grads();
    model.forward_backward(tokens.data(), targets.data(), batch, seq, 1.0 / static_cast<double>(batch * seq));
    clip_by_global_norm(model.grads().data(), ranges, 1.0);
    opt.step(model.params().data(), model.grads().data(), ranges, 1e-3);
  }
  const double tokens_done = static_cast<double>(state.iterations() * batch * seq);
  state.counters["params_M"] = static_cast<double>(c.parameter_count()) / 1e6;
  state.counters["tokens_per_s"] = benchmark::Counter(tokens_done, benchmark::Counter::kIsRate);
  state.counters["GFLOP_per_s"] =
      benchmark::Counter(tokens_done * train_flops_per_token(c, seq) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_TrainStep, small, "small")->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
BENCHMARK_CAPTURE(BM_TrainStep, tiny, "tiny")->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();

// BM_TrainAttention/<seq>/<pod>: attention_forward + attention_backward of one
// layer of podkv-ref's shape (8 heads, 4 KV heads, head_dim 32), batch 2; pod = 1
// reads distant keys (sink 4, recent 256) from a second key array.
void BM_TrainAttention(benchmark::State& state) {
  const int64_t seq = state.range(0);
  const bool pod = state.range(1) != 0;
  AttentionShape s;
  s.batch = 2, s.seq = seq, s.heads = 8, s.kv_heads = 4, s.dim = 32, s.sink = 4, s.recent = 256;
  const size_t nq = static_cast<size_t>(s.batch * seq * s.heads * s.dim), nk = nq / 2;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
  };
  const std::vector<float> q = random(nq), k = random(nk), anchor = random(nk), v = random(nk), dout = random(nq);
  std::vector<float> probs(static_cast<size_t>(s.batch * s.heads * seq * seq)), out(nq), dq(nq), dk(nk), dka(nk),
      dv(nk);
  std::vector<const float*> distant(s.kv_heads, pod ? anchor.data() : nullptr);
  std::vector<float*> distant_d(s.kv_heads, pod ? dka.data() : nullptr);
  for (auto _ : state) {
    attention_forward(s, q.data(), k.data(), distant.data(), v.data(), probs.data(), out.data());
    attention_backward(s, dout.data(), q.data(), k.data(), distant.data(), v.data(), probs.data(), dq.data(),
                       dk.data(), distant_d.data(), dv.data());
    benchmark::DoNotOptimize(dq.data());
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * s.batch * seq),
                                                      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TrainAttention)->Args({1024, 0})->Args({1024, 1})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Sgemm(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  for (auto _ : state) {
    gemm<float>(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP_per_s"] = benchmark::Counter(2.0 * n * n * n * static_cast<double>(state.iterations()) / 1e9,
                                                     benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Sgemm)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
