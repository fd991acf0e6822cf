// Decode attention alone (one query per layer, every layer of a 100M-shaped
// model: 12 layers, 12 query heads, 4 KV heads, head_dim 64) over a paged
// cache of `depth` tokens, per KV policy. Reports the KV bytes the step reads
// as a rate (bytes_per_second) to compare with the machine's bandwidth, and
// lets PoD's cost be read against dense in the same run:
//   podkv_bench --benchmark_filter=DecodeAttention
// Prefill attention (a chunk of 256 queries after `depth` cached tokens, every
// layer, wall-clock time) reports GFLOP/s (4·d·H flops per causal query-key
// pair: QK and PV), to read against OpenBLAS sgemm at 1024³ (BM_Sgemm in
// bench_train.cpp, same binary, also wall-clock):
//   podkv_bench --benchmark_filter='Attention|Sgemm'
#include <benchmark/benchmark.h>

#include <random>

#include "kv/kv_pool.h"
#include "kv/kv_view_builder.h"
#include "ops/attention.h"
#include "policy/policies.h"

namespace podkv {
namespace {

ModelConfig geometry() {
  ModelConfig c;
  c.num_layers = 12;
  c.num_heads = 12;
  c.num_kv_heads = 4;
  c.head_dim = 64;
  return c;
}

KvLayout layout_for(const std::string& policy) {
  KvPolicyOptions o;
  o.policy = policy;
  o.sink_tokens = 16;
  o.recent_tokens = 256;
  o.budget = 1024;
  if (policy == "pod" || policy == "pod+snapkv") o.pod = uniform_pod_config(12, 4, 3, 16, 256);
  return make_kv_layout(geometry(), o);
}

// Writes random keys and values of positions [start, end) into every stream that keeps them.
void fill_chunk(KvCache& cache, HostKvPool& pool, int seq, int64_t start, int64_t end, std::mt19937& rng) {
  const KvLayout& layout = cache.layout();
  std::normal_distribution<float> normal;
  std::vector<float> x(layout.head_dim);
  auto write = [&](int kind, int l, int h, int64_t t) {
    for (auto& e : x) e = normal(rng);
    const auto [page, slot] = cache.entry_location(seq, kind, l, h, t);
    kv_encode(cache.dtype(), x.data(), layout.head_dim,
              pool.base() + static_cast<size_t>(page) * cache.page_bytes() + slot * cache.entry_bytes());
  };
  for (int l = 0; l < layout.num_layers; ++l)
    for (int h = 0; h < layout.num_kv_heads; ++h)
      for (int64_t t = start; t < end; ++t) {
        if (layout.key_rule(l, h).retention != Retention::None) write(kKeys, l, h, t);
        if (layout.value_rule(l, h).retention != Retention::None) write(kValues, l, h, t);
      }
}

// A sequence of `depth` committed tokens, filled in chunks like a prefill (the
// attention of the fill itself is not run).
int filled_sequence(KvCache& cache, HostKvPool& pool, int64_t depth, std::mt19937& rng) {
  const int seq = cache.add_sequence();
  for (int64_t start = 0; start < depth;) {
    const int64_t end = std::min(depth, start + 256);
    cache.reserve(seq, end);
    fill_chunk(cache, pool, seq, start, end, rng);
    cache.commit(seq, end);
    start = end;
  }
  cache.end_prefill(seq);
  return seq;
}

// One attention call per layer for `tokens` queries at positions depth.. (the
// same queries in every layer: the benchmark times the kernel, not a model).
void all_layers_attention(const KvView& view, const ModelConfig& c, const float* q, int64_t depth, int64_t tokens,
                          std::vector<float>& gates, float* out) {
  const int64_t row_begin[2] = {0, tokens};
  const int64_t first_pos[1] = {depth};
  AttentionBatch batch;
  batch.num_seqs = 1;
  batch.row_begin = row_begin;
  batch.first_pos = first_pos;
  gates.resize(static_cast<size_t>(c.num_layers) * tokens * c.num_heads);
  AttentionOutputs outputs;
  outputs.out = out;
  outputs.gates = gates.data();
  for (int l = 0; l < c.num_layers; ++l) {
    AttentionParams params;
    params.layer = l;
    params.num_heads = c.num_heads;
    params.scale = 0.125f;
    attention(view, batch, params, q, outputs);
  }
}

void decode_attention(benchmark::State& state, const std::string& policy) {
  const ModelConfig c = geometry();
  const int64_t depth = state.range(0);
  const KvLayout layout = layout_for(policy);
  KvCache cache(layout, static_cast<size_t>(2) * c.num_layers * c.num_kv_heads * (depth + 64) * c.head_dim * 4 + (64 << 20));
  HostKvPool pool(cache.num_pages(), cache.page_bytes(), cache.entry_bytes());
  cache.attach_pool(&pool);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  const int seq = filled_sequence(cache, pool, depth, rng);
  std::vector<float> q(static_cast<size_t>(c.num_heads) * c.head_dim), out(q.size());
  for (auto& x : q) x = normal(rng);
  std::vector<float> gates;
  cache.reserve(seq, depth + 1);  // the query's own key and value (left as they are)
  KvViewBuilder builder;
  const KvView& view = builder.build(cache, pool.base(), {seq}, {depth + 1});
  for (auto _ : state) {
    all_layers_attention(view, c, q.data(), depth, 1, gates, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          layout.retained_vectors(depth + 1) * c.head_dim * 4);
  state.counters["kv_bytes"] = static_cast<double>(layout.retained_vectors(depth + 1) * c.head_dim * 4);
}

void BM_DecodeAttention_dense(benchmark::State& s) { decode_attention(s, "dense"); }
void BM_DecodeAttention_pod(benchmark::State& s) { decode_attention(s, "pod"); }
void BM_DecodeAttention_streaming(benchmark::State& s) { decode_attention(s, "streaming"); }
void BM_DecodeAttention_h2o(benchmark::State& s) { decode_attention(s, "h2o"); }
void BM_DecodeAttention_snapkv(benchmark::State& s) { decode_attention(s, "snapkv"); }
void BM_DecodeAttention_pod_snapkv(benchmark::State& s) { decode_attention(s, "pod+snapkv"); }
BENCHMARK(BM_DecodeAttention_dense)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeAttention_pod)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeAttention_streaming)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeAttention_h2o)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeAttention_snapkv)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeAttention_pod_snapkv)->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);

// One prefill chunk of `chunk` queries at positions depth .. depth + chunk - 1
// through every layer; the chunk's keys and values are written once, outside
// the timed loop (attention does not change the cache for these policies).
void prefill_attention(benchmark::State& state, const std::string& policy) {
  const ModelConfig c = geometry();
  const int64_t depth = state.range(0);
  const int64_t chunk = 256;
  const KvLayout layout = layout_for(policy);
  KvCache cache(layout, static_cast<size_t>(2) * c.num_layers * c.num_kv_heads * (depth + chunk + 64) * c.head_dim * 4 +
                            (64 << 20));
  HostKvPool pool(cache.num_pages(), cache.page_bytes(), cache.entry_bytes());
  cache.attach_pool(&pool);
  std::mt19937 rng(1);
  const int seq = filled_sequence(cache, pool, depth, rng);
  cache.reserve(seq, depth + chunk);
  fill_chunk(cache, pool, seq, depth, depth + chunk, rng);
  std::normal_distribution<float> normal;
  std::vector<float> q(static_cast<size_t>(chunk) * c.num_heads * c.head_dim), out(q.size());
  for (auto& x : q) x = normal(rng);
  std::vector<float> gates;
  KvViewBuilder builder;
  const KvView& view = builder.build(cache, pool.base(), {seq}, {depth + chunk});
  for (auto _ : state) {
    all_layers_attention(view, c, q.data(), depth, chunk, gates, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  // Causal query-key pairs: query t sees depth + t + 1 keys.
  const double pairs = static_cast<double>(chunk) * depth + static_cast<double>(chunk) * (chunk + 1) / 2;
  const double flops = 4.0 * pairs * c.head_dim * c.num_heads * c.num_layers;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9 * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
}

void BM_PrefillAttention_dense(benchmark::State& s) { prefill_attention(s, "dense"); }
void BM_PrefillAttention_pod(benchmark::State& s) { prefill_attention(s, "pod"); }
BENCHMARK(BM_PrefillAttention_dense)->Arg(0)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PrefillAttention_pod)->Arg(0)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace podkv
