// GEMV and GEMM throughput next to the machine's copy and read bandwidth, in one
// binary so the ratios come from the same run:
//   podkv_bench --benchmark_filter='Gemv|Gemm|Sgemm|Bandwidth'
// (BM_Sgemm, the machine's float32 GEMM rate through OpenBLAS, is in bench_train.cpp.)
// bytes_per_second of BM_GemvRotating/<dtype> ÷ that of BM_CopyBandwidth is the
// fraction of streaming bandwidth the decode GEMV achieves.
//
// BM_Gemv reuses one matrix (a 4096×4096 BF16 one is 32 MiB, about an L3, so it
// can be partly cache-resident); BM_GemvRotating cycles through enough copies to
// read ≥ 256 MiB between reuses, like the layers of a model during decode — the
// honest memory-bound number. Real time is used since the work is multithreaded.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "bench_probe/bandwidth.h"
#include "ops/matmul.h"
#include "util/dtype.h"
#include "util/quant.h"

namespace {

using podkv::DType;

// The GEMVs take all seven, the GEMM the first four.
constexpr DType kDtypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K};
constexpr int kGemvDtypes = 7, kGemmDtypes = 4;

// Random weights of one [rows, cols] matrix in `dtype` (values in [-1, 1]).
std::vector<uint8_t> make_weights(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<uint8_t> bytes(podkv::dtype_bytes(dtype, static_cast<size_t>(rows * cols)));
  const int64_t n = rows * cols;
  if (dtype == DType::Q4_0 || dtype == DType::Q4_K) {
    std::vector<float> values(static_cast<size_t>(n));
    for (auto& v : values) v = dist(rng);
    (dtype == DType::Q4_0 ? podkv::quant::quantize_q4_0 : podkv::quant::quantize_q4_k)(values.data(), bytes.data(),
                                                                                     values.size());
    return bytes;
  }
  if (dtype == DType::Q6_K) {  // random quants and sub-block scales, a small d
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    for (int64_t b = 0; b < n / podkv::quant::kSuperBlock; ++b) {
      const uint16_t d = podkv::f32_to_f16(dist(rng) / 4096.0f);
      std::memcpy(bytes.data() + b * sizeof(podkv::quant::BlockQ6_K) + 208, &d, 2);
    }
    return bytes;
  }
  if (dtype == DType::Q8_0) {
    for (int64_t b = 0; b < n / podkv::kQ8BlockSize; ++b) {
      uint8_t* blk = bytes.data() + b * podkv::kQ8BlockBytes;
      const uint16_t d = podkv::f32_to_f16(dist(rng) / 127.0f);
      std::memcpy(blk, &d, 2);
      for (int i = 0; i < podkv::kQ8BlockSize; ++i)
        blk[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(rng() % 255 - 127));
    }
    return bytes;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float v = dist(rng);
    if (dtype == DType::F32) {
      std::memcpy(bytes.data() + 4 * i, &v, 4);
    } else {
      const uint16_t h = dtype == DType::F16 ? podkv::f32_to_f16(v) : podkv::f32_to_bf16(v);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  return bytes;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

// Args: {dtype index, rows, cols, copies}. copies > 1 rotates through that many
// distinct matrices (copies of the first: generating random data is slow).
void run_gemv(benchmark::State& state) {
  const DType dtype = kDtypes[state.range(0)];
  const int64_t rows = state.range(1), cols = state.range(2);
  const int copies = static_cast<int>(state.range(3));
  std::vector<std::vector<uint8_t>> mats(copies);
  mats[0] = make_weights(dtype, rows, cols, 1);
  for (int c = 1; c < copies; ++c) mats[c] = mats[0];
  const auto x = random_floats(static_cast<size_t>(cols), 2);
  std::vector<float> y(static_cast<size_t>(rows));
  int next = 0;
  for (auto _ : state) {
    const podkv::WeightMatrix w{dtype, rows, cols, mats[next].data()};
    podkv::gemv(w, x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    next = (next + 1) % copies;
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(mats[0].size()));
  state.SetLabel(std::string(podkv::dtype_name(dtype)) + " " + podkv::matmul_isa() + " threads=" +
                 std::to_string(podkv::num_threads()));
}

void gemv_args(benchmark::internal::Benchmark* b, bool rotating) {
  for (int d = 0; d < kGemvDtypes; ++d) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{4096, 4096}, {2048, 8192}}) {
      const int64_t bytes = static_cast<int64_t>(podkv::dtype_bytes(kDtypes[d], rows * cols));
      const int64_t copies = rotating ? std::max<int64_t>(2, ((int64_t{256} << 20) + bytes - 1) / bytes) : 1;
      b->Args({d, rows, cols, copies});
    }
  }
  b->ArgNames({"dtype", "rows", "cols", "copies"})->UseRealTime()->Unit(benchmark::kMicrosecond);
}

void BM_Gemv(benchmark::State& state) { run_gemv(state); }
BENCHMARK(BM_Gemv)->Apply([](benchmark::internal::Benchmark* b) { gemv_args(b, false); });

void BM_GemvRotating(benchmark::State& state) { run_gemv(state); }
BENCHMARK(BM_GemvRotating)->Apply([](benchmark::internal::Benchmark* b) { gemv_args(b, true); });

// Each iteration is one full measurement (best of 3 streaming copies of 256 MiB);
// the reported bytes/s is that measured bandwidth (read + write counted).
void BM_CopyBandwidth(benchmark::State& state) {
  double gbs = 0;
  for (auto _ : state) gbs = std::max(gbs, podkv::measure_copy_bandwidth_gbs(size_t{256} << 20, 3));
  state.counters["bytes_per_second"] = benchmark::Counter(gbs * 1e9, benchmark::Counter::kDefaults,
                                                          benchmark::Counter::kIs1024);
  state.counters["GBps"] = gbs;
  state.SetLabel("read+write, threads=" + std::to_string(podkv::num_threads()));
}
BENCHMARK(BM_CopyBandwidth)->Iterations(2)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_ReadBandwidth(benchmark::State& state) {
  double gbs = 0;
  for (auto _ : state) gbs = std::max(gbs, podkv::measure_read_bandwidth_gbs(size_t{256} << 20, 3));
  state.counters["bytes_per_second"] = benchmark::Counter(gbs * 1e9, benchmark::Counter::kDefaults,
                                                          benchmark::Counter::kIs1024);
  state.counters["GBps"] = gbs;
  state.SetLabel("read only, threads=" + std::to_string(podkv::num_threads()));
}
BENCHMARK(BM_ReadBandwidth)->Iterations(2)->UseRealTime()->Unit(benchmark::kMillisecond);

// Several tokens through one matrix: T = 2..64 is a batch of sequences decoding
// together, larger T is prefill. Shapes: 4096×4096, and 2048×768 (the gate/up
// projection of the 100M preset, whose bf16 GGUF is issue 11's comparison with
// llama.cpp). Args: {dtype index, rows, cols, tokens, copies};
// copies > 1 rotates through ≥ 256 MiB of matrices so W comes from memory, as in
// a decode step. bytes_per_second counts weight bytes (each read once per call);
// GFLOPS = 2·T·N·K per call.
void BM_Gemm(benchmark::State& state) {
  const DType dtype = kDtypes[state.range(0)];
  const int64_t rows = state.range(1), cols = state.range(2), tokens = state.range(3);
  const int copies = static_cast<int>(state.range(4));
  std::vector<std::vector<uint8_t>> mats(copies);
  mats[0] = make_weights(dtype, rows, cols, 3);
  for (int c = 1; c < copies; ++c) mats[c] = mats[0];
  const auto x = random_floats(static_cast<size_t>(tokens * cols), 4);
  std::vector<float> y(static_cast<size_t>(tokens * rows));
  int next = 0;
  for (auto _ : state) {
    const podkv::WeightMatrix w{dtype, rows, cols, mats[next].data()};
    podkv::matmul(w, x.data(), tokens, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    next = (next + 1) % copies;
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(mats[0].size()));
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * tokens * rows * cols / 1e9,
                                                benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(podkv::dtype_name(dtype)) + " T=" + std::to_string(tokens) +
                 " threads=" + std::to_string(podkv::num_threads()));
}
BENCHMARK(BM_Gemm)
    ->Apply([](benchmark::internal::Benchmark* b) {
      for (int d = 0; d < kGemmDtypes; ++d) {
        for (auto [rows, cols] : {std::pair<int64_t, int64_t>{4096, 4096}, {2048, 768}}) {
          const int64_t bytes = static_cast<int64_t>(podkv::dtype_bytes(kDtypes[d], rows * cols));
          const int64_t copies = std::max<int64_t>(2, ((int64_t{256} << 20) + bytes - 1) / bytes);
          for (int64_t t : {2, 4, 8, 16, 32, 64}) b->Args({d, rows, cols, t, copies});
          b->Args({d, rows, cols, 512, 1});
        }
      }
    })
    ->ArgNames({"dtype", "rows", "cols", "tokens", "copies"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
