// --perf: each op on model-sized shapes (Llama-7B-like widths: hidden 4096,
// 32 query / 8 KV heads of 128, intermediate 11008), timed as the mean over
// repetitions after a warm-up. Memory-bound ops report GB/s (bytes read and
// written once / time); matmul and attention also report GFLOP/s.
#include <chrono>
#include <functional>

#include "harness.h"
#include "kv_scenario.h"
#include "reference.h"

namespace podkv::backend_test {

namespace {

struct Perf {
  BackendOps& ops;
  const Options& options;

  // Mean seconds of fn over at least 3 runs and 0.3 s, after one warm-up run.
  double time(const std::function<void()>& fn) {
    using clock = std::chrono::steady_clock;
    fn();
    ops.synchronize();
    int reps = 0;
    const auto start = clock::now();
    double elapsed = 0;
    do {
      fn();
      ops.synchronize();
      ++reps;
      elapsed = std::chrono::duration<double>(clock::now() - start).count();
    } while (reps < 3 || elapsed < 0.3);
    return elapsed / reps;
  }

  void line(const std::string& op, const std::string& shape, double seconds, double bytes, double flops) {
    char gflops[32] = "";
    if (flops > 0) std::snprintf(gflops, sizeof gflops, "%8.1f GFLOP/s", flops / seconds * 1e-9);
    std::string repro = "podkv_test_backend_ops --perf --op " + op + " --backend " + ops.name();
    if (options.threads > 0) repro += " -t " + std::to_string(options.threads);
    std::printf("%-12s %-46s %-5s %10.1f us %8.2f GB/s %16s   %s\n", op.c_str(), shape.c_str(), ops.name().c_str(),
                seconds * 1e6, bytes / seconds * 1e-9, gflops, repro.c_str());
    std::fflush(stdout);
  }
  bool wants(const std::string& op) const { return options.op.empty() || options.op == op; }
};

void elementwise(Perf& p, std::mt19937_64& rng) {
  BackendOps& ops = p.ops;
  const int64_t rows = 512, hidden = 4096, inter = 11008, heads = 32, dim = 128;
  if (p.wants("embedding")) {
    const int64_t vocab = 8192;
    DeviceBuffer table = to_device(ops, random_weight_bytes(DType::BF16, vocab, hidden, rng));
    std::vector<int32_t> tokens(rows);
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
    DeviceBuffer d_tokens = to_device(ops, tokens), out(ops, rows * hidden * 4);
    const WeightMatrix w{DType::BF16, vocab, hidden, table.data()};
    const double s = p.time([&] { ops.embedding(w, d_tokens.as<int32_t>(), rows, out.as<float>()); });
    p.line("embedding", "rows=512 hidden=4096 bf16", s, rows * hidden * (2.0 + 4.0), 0);
  }
  DeviceBuffer x = to_device(ops, normal_floats(rng, rows * inter)), y = to_device(ops, normal_floats(rng, rows * inter));
  DeviceBuffer out(ops, rows * inter * 4), weight = to_device(ops, normal_floats(rng, hidden));
  if (p.wants("rms_norm")) {
    const double s = p.time([&] { ops.rms_norm(x.as<float>(), weight.as<float>(), rows, hidden, 1e-5, out.as<float>()); });
    p.line("rms_norm", "rows=512 n=4096", s, 4.0 * (2 * rows * hidden + hidden), 0);
  }
  if (p.wants("rope")) {
    std::vector<int64_t> positions(rows);
    for (int64_t i = 0; i < rows; ++i) positions[i] = 3000 + i;
    std::vector<float> inv_freq(dim / 2);
    for (int i = 0; i < dim / 2; ++i) inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / dim));
    DeviceBuffer d_pos = to_device(ops, positions), d_freq = to_device(ops, inv_freq);
    const double s = p.time([&] { ops.rope(x.as<float>(), rows, heads, dim, d_pos.as<int64_t>(), d_freq.as<float>(), false); });
    p.line("rope", "rows=512 heads=32 dim=128", s, 4.0 * 2 * rows * heads * dim, 0);
  }
  if (p.wants("silu_mul")) {
    // Re-running on its own output keeps the values finite (|silu(g)·u| stays small).
    const double s = p.time([&] { ops.silu_mul(x.as<float>(), y.as<float>(), rows * inter); });
    p.line("silu_mul", "n=512x11008", s, 4.0 * 3 * rows * inter, 0);
  }
  if (p.wants("add")) {
    const double s = p.time([&] { ops.add(out.as<float>(), y.as<float>(), rows * hidden); });
    p.line("add", "n=512x4096", s, 4.0 * 3 * rows * hidden, 0);
  }
  if (p.wants("gather_rows")) {
    std::vector<int64_t> picked(64);
    for (int64_t i = 0; i < 64; ++i) picked[i] = i * 8;
    DeviceBuffer d_rows = to_device(ops, picked);
    const double s = p.time([&] { ops.gather_rows(x.as<float>(), inter, d_rows.as<int64_t>(), 64, out.as<float>()); });
    p.line("gather_rows", "picked=64 of 512 width=11008", s, 4.0 * 2 * 64 * inter, 0);
  }
}

void matmul(Perf& p, std::mt19937_64& rng) {
  const int64_t n = 4096;
  for (DType dtype : {DType::F32, DType::F16, DType::BF16, DType::Q8_0}) {
    DeviceBuffer w = to_device(p.ops, random_weight_bytes(dtype, n, n, rng));
    const WeightMatrix m{dtype, n, n, w.data()};
    for (int64_t rows : {1, 2, 8, 128}) {
      if (rows == 2 && dtype != DType::BF16) continue;
      DeviceBuffer x = to_device(p.ops, normal_floats(rng, rows * n)), y(p.ops, rows * n * 4);
      const double s = p.time([&] { p.ops.matmul(m, x.as<float>(), rows, y.as<float>(), nullptr); });
      p.line("matmul", "rows=" + std::to_string(rows) + " 4096x4096 " + dtype_name(dtype), s,
             static_cast<double>(m.bytes()) + 4.0 * 2 * rows * n, 2.0 * rows * n * n);
    }
  }
}

void kv_ops(Perf& p, std::mt19937_64& rng) {
  const KvGeometry geo{1, 8, 32, 128};
  if (p.wants("kv_write")) {
    for (KvDType dtype : {KvDType::F16, KvDType::Q8_0}) {
      KvScenario s(p.ops, KvCaseSpec{"dense", dtype, 16, geo, {{0, 512, true}}}, 7);
      DeviceBuffer k = to_device(p.ops, normal_floats(rng, 512 * 8 * 128)), v = to_device(p.ops, normal_floats(rng, 512 * 8 * 128));
      p.ops.set_step(s.view(), s.batch());
      const double sec = p.time([&] { p.ops.kv_write(0, k.as<float>(), v.as<float>()); });
      p.line("kv_write", std::string("rows=512 Hkv=8 d=128 ") + kv_dtype_name(dtype), sec,
             2.0 * 512 * 8 * (128 * 4 + kv_entry_bytes(dtype, 128)), 0);
    }
  }
  if (!p.wants("attention")) return;
  struct Run {
    const char* name;
    KvDType dtype;
    std::vector<EntrySpec> entries;
  };
  for (const Run& run : {Run{"decode B=4 kv=4096", KvDType::F32, {4, EntrySpec{4095, 1, false}}},
                         Run{"decode B=4 kv=4096", KvDType::F16, {4, EntrySpec{4095, 1, false}}},
                         Run{"decode B=4 kv=4096", KvDType::BF16, {4, EntrySpec{4095, 1, false}}},
                         Run{"prefill 512 after 3584", KvDType::F16, {EntrySpec{3584, 512, true}}},
                         Run{"prefill 512 after 3584", KvDType::BF16, {EntrySpec{3584, 512, true}}}}) {
    KvScenario s(p.ops, KvCaseSpec{"dense", run.dtype, 16, geo, run.entries}, 8);
    const int64_t rows = s.rows();
    DeviceBuffer k = to_device(p.ops, s.step_rows(true, 0)), v = to_device(p.ops, s.step_rows(false, 0));
    DeviceBuffer q = to_device(p.ops, normal_floats(rng, rows * geo.heads * geo.dim)), out(p.ops, q.bytes());
    p.ops.set_step(s.view(), s.batch());
    p.ops.kv_write(0, k.as<float>(), v.as<float>());
    AttentionParams params;
    params.num_heads = geo.heads;
    params.scale = static_cast<float>(1.0 / std::sqrt(128.0));
    AttentionOutputs outputs;
    outputs.out = out.as<float>();
    const double sec = p.time([&] { p.ops.attention(params, q.as<float>(), outputs); });
    // Keys and values are read once per KV head (the query heads of a group share them).
    double flops = 0, bytes = 0;
    for (const EntrySpec& e : run.entries) {
      for (int64_t t = 0; t < e.tokens; ++t) flops += 4.0 * (e.history + t + 1) * geo.dim * geo.heads;
      bytes += 2.0 * (e.history + e.tokens) * geo.kv_heads * kv_entry_bytes(run.dtype, geo.dim);
    }
    bytes += 2.0 * 4 * rows * geo.heads * geo.dim;
    p.line("attention", std::string(run.name) + " H=32/8 d=128 " + kv_dtype_name(run.dtype), sec, bytes, flops);
  }
}

}  // namespace

void run_perf(BackendOps& ops, const Options& options) {
  Perf p{ops, options};
  std::mt19937_64 rng(7);
  elementwise(p, rng);
  if (p.wants("matmul")) matmul(p, rng);
  kv_ops(p, rng);
}

}  // namespace podkv::backend_test
