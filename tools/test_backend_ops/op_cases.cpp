// The per-token ops over odd sizes, each against a plain double-precision
// reference written here: embedding, rms_norm, rope, silu_mul, add, matmul,
// gather_rows.
#include <cmath>
#include <cstring>

#include "harness.h"
#include "reference.h"

namespace podkv::backend_test {

namespace {

const DType kWeightTypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0};
const int64_t kRows[] = {1, 3, 17, 64};

std::string str(int64_t v) { return std::to_string(v); }

void embedding_cases(BackendOps& ops, Reporter& report, std::mt19937_64& rng) {
  const int64_t vocab = 37;
  for (DType dtype : kWeightTypes) {
    const std::vector<int64_t> hiddens = dtype == DType::Q8_0 ? std::vector<int64_t>{32, 96} : std::vector<int64_t>{24, 100};
    for (int64_t hidden : hiddens) {
      for (int64_t rows : kRows) {
        const std::vector<uint8_t> table = random_weight_bytes(dtype, vocab, hidden, rng);
        std::vector<int32_t> tokens(rows);
        for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
        DeviceBuffer d_table = to_device(ops, table), d_tokens = to_device(ops, tokens);
        DeviceBuffer d_out(ops, rows * hidden * sizeof(float));
        const WeightMatrix w{dtype, vocab, hidden, d_table.data()};
        ops.embedding(w, d_tokens.as<int32_t>(), rows, d_out.as<float>());
        const std::vector<float> got = to_host<float>(d_out, rows * hidden);
        std::vector<double> ref;
        for (int64_t r = 0; r < rows; ++r) {
          const std::vector<double> row = weight_row(dtype, table.data(), hidden, tokens[r]);
          ref.insert(ref.end(), row.begin(), row.end());
        }
        // Widening is exact for every stored type.
        report.result("embedding", "rows=" + str(rows) + " vocab=" + str(vocab) + " hidden=" + str(hidden) + " " +
                          dtype_name(dtype), ops.name(), max_rel_err(got.data(), ref.data(), ref.size()), 0.0);
      }
    }
  }
}

// Rows that fit the CUDA kernel's registers (up to 8192 elements) and one that does not (9000).
void rms_norm_cases(BackendOps& ops, Reporter& report, std::mt19937_64& rng) {
  const double eps = 1e-5;
  for (int64_t n : {24, 100, 4096, 4099, 9000}) {
    for (int64_t rows : kRows) {
      const std::vector<float> x = normal_floats(rng, rows * n, 3.0f), w = normal_floats(rng, n);
      DeviceBuffer d_x = to_device(ops, x), d_w = to_device(ops, w), d_out(ops, x.size() * sizeof(float));
      ops.rms_norm(d_x.as<float>(), d_w.as<float>(), rows, n, eps, d_out.as<float>());
      const std::vector<float> got = to_host<float>(d_out, x.size());
      std::vector<double> ref(x.size());
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[r * n + i]) * x[r * n + i];
        const double inv = 1.0 / std::sqrt(ss / n + eps);
        for (int64_t i = 0; i < n; ++i) ref[r * n + i] = x[r * n + i] * inv * w[i];
      }
      report.result("rms_norm", "rows=" + str(rows) + " n=" + str(n), ops.name(),
                    max_rel_err(got.data(), ref.data(), ref.size()), 1e-6);
    }
  }
}

void rope_cases(BackendOps& ops, Reporter& report, std::mt19937_64& rng) {
  const int heads = 3;
  for (int dim : {6, 64, 80, 96, 128}) {
    for (bool interleaved : {false, true}) {
      for (int64_t rows : {1, 17}) {
        std::vector<float> inv_freq(dim / 2);
        for (int i = 0; i < dim / 2; ++i) inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / dim));
        std::vector<int64_t> positions(rows);
        for (int64_t& p : positions) p = static_cast<int64_t>(rng() % 5000);
        const std::vector<float> x = normal_floats(rng, rows * heads * dim);
        DeviceBuffer d_x = to_device(ops, x), d_pos = to_device(ops, positions), d_freq = to_device(ops, inv_freq);
        ops.rope(d_x.as<float>(), rows, heads, dim, d_pos.as<int64_t>(), d_freq.as<float>(), interleaved);
        const std::vector<float> got = to_host<float>(d_x, x.size());
        std::vector<double> ref(x.size());
        for (int64_t r = 0; r < rows; ++r) {
          for (int h = 0; h < heads; ++h) {
            const float* v = &x[(r * heads + h) * dim];
            double* o = &ref[(r * heads + h) * dim];
            for (int i = 0; i < dim / 2; ++i) {
              // The angle is defined in float32 (as transformers computes it); cos and sin in double.
              const double angle = static_cast<float>(positions[r]) * inv_freq[i];
              const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + dim / 2;
              o[a] = v[a] * std::cos(angle) - v[b] * std::sin(angle);
              o[b] = v[b] * std::cos(angle) + v[a] * std::sin(angle);
            }
          }
        }
        report.result("rope", "rows=" + str(rows) + " heads=" + str(heads) + " dim=" + str(dim) +
                                  (interleaved ? " interleaved" : " halves"),
                      ops.name(), max_rel_err(got.data(), ref.data(), ref.size()), 2e-6);
      }
    }
  }
}

void elementwise_cases(BackendOps& ops, Reporter& report, std::mt19937_64& rng) {
  for (int64_t n : {1, 17, 100, 4099, 70001}) {
    const std::vector<float> gate = normal_floats(rng, n, 4.0f), up = normal_floats(rng, n);
    if (report.wants("silu_mul")) {
      DeviceBuffer d_gate = to_device(ops, gate), d_up = to_device(ops, up);
      ops.silu_mul(d_gate.as<float>(), d_up.as<float>(), n);
      const std::vector<float> got = to_host<float>(d_gate, n);
      std::vector<double> ref(n);
      for (int64_t i = 0; i < n; ++i) ref[i] = gate[i] / (1.0 + std::exp(-static_cast<double>(gate[i]))) * up[i];
      report.result("silu_mul", "n=" + str(n), ops.name(), max_rel_err(got.data(), ref.data(), n), 1e-6);
    }
    if (report.wants("add")) {
      DeviceBuffer d_x = to_device(ops, gate), d_y = to_device(ops, up);
      ops.add(d_x.as<float>(), d_y.as<float>(), n);
      const std::vector<float> got = to_host<float>(d_x, n);
      std::vector<double> ref(n);
      for (int64_t i = 0; i < n; ++i) ref[i] = static_cast<double>(gate[i]) + up[i];
      report.result("add", "n=" + str(n), ops.name(), max_rel_err(got.data(), ref.data(), n), 1e-7);
    }
  }
}

// The CUDA backend's tensor-core GEMM (BF16 weights, more than 8 rows) rounds the activations to
// bf16: 2^-9 relative per product, a few times that over 100 terms of random sign.
// The CPU's single-row GEMV for Q8_0 weights, in the default QuantDot::Int8 mode (ops/matmul.h),
// rounds x to int8 blocks of 32: each element off by up to 1/254 of its block's max|x|.
double matmul_tolerance(const BackendOps& ops, DType dtype, int64_t rows) {
  if (ops.name() == "cpu" && dtype == DType::Q8_0 && rows == 1 && quant_dot() == QuantDot::Int8) return 1e-2;
  return ops.name() == "cuda" && dtype == DType::BF16 && rows > 8 ? 1e-2 : 1e-4;
}

void matmul_cases(BackendOps& ops, Reporter& report, std::mt19937_64& rng) {
  for (DType dtype : kWeightTypes) {
    // (output features, input features); Q8_0 rows are whole blocks of 32. 2056 inputs: 257
    // 16-byte chunks of BF16, more than a whole group of 8 chunks per lane of a one-row GEMV plus a rest.
    // 3000 x 4104 BF16 (one row only): a matrix of 24.6 MB, more blocks than the GPU has SMs, for
    // CUDA's one-row kernel (16 features per block: 187 blocks plus one of 8; 513 16-byte chunks per
    // row: whole groups plus a rest).
    std::vector<std::pair<int64_t, int64_t>> shapes =
        dtype == DType::Q8_0 ? std::vector<std::pair<int64_t, int64_t>>{{37, 96}, {100, 128}}
                             : std::vector<std::pair<int64_t, int64_t>>{{37, 24}, {100, 100}, {37, 2056}};
    // 200 x 4192 BF16: inputs a multiple of 32, so 3 rows take CUDA's 2..8-row tensor-core GEMV; on a
    // GPU of 132 SMs its inputs split 16 ways of 9 chunks of 32 (two groups of four and one, gemv.cu's
    // mma_group), the 15th slice 5 chunks and the 16th none.
    if (dtype == DType::BF16) {
      shapes.push_back({3000, 4104});
      shapes.push_back({200, 4192});
    }
    for (auto [out_features, in_features] : shapes) {
      for (int64_t rows : kRows) {
        if (out_features * in_features > 1000000 && rows != 1) continue;
        const bool with_bias = rows % 2 == 1;
        const std::vector<uint8_t> w = random_weight_bytes(dtype, out_features, in_features, rng);
        const std::vector<float> x = normal_floats(rng, rows * in_features), bias = normal_floats(rng, out_features);
        DeviceBuffer d_w = to_device(ops, w), d_x = to_device(ops, x), d_bias = to_device(ops, bias);
        DeviceBuffer d_y(ops, rows * out_features * sizeof(float));
        const WeightMatrix m{dtype, out_features, in_features, d_w.data()};
        ops.matmul(m, d_x.as<float>(), rows, d_y.as<float>(), with_bias ? d_bias.as<float>() : nullptr);
        const std::vector<float> got = to_host<float>(d_y, rows * out_features);
        std::vector<double> ref(got.size());
        for (int64_t o = 0; o < out_features; ++o) {
          const std::vector<double> wr = weight_row(dtype, w.data(), in_features, o);
          for (int64_t r = 0; r < rows; ++r) {
            double s = with_bias ? bias[o] : 0.0;
            for (int64_t i = 0; i < in_features; ++i) s += wr[i] * x[r * in_features + i];
            ref[r * out_features + o] = s;
          }
        }
        report.result("matmul", "rows=" + str(rows) + " out=" + str(out_features) + " in=" + str(in_features) + " " +
                                    dtype_name(dtype) + (with_bias ? " +bias" : ""),
                      ops.name(), max_rel_err(got.data(), ref.data(), ref.size()), matmul_tolerance(ops, dtype, rows));
      }
    }
  }
}

void gather_cases(BackendOps& ops, Reporter& report, std::mt19937_64& rng) {
  for (auto [rows, width, count] : {std::tuple<int64_t, int64_t, int64_t>{1, 24, 1}, {17, 100, 3}, {64, 37, 64}}) {
    const std::vector<float> x = normal_floats(rng, rows * width);
    std::vector<int64_t> picked(count);
    for (int64_t i = 0; i < count; ++i) picked[i] = count == rows ? i : static_cast<int64_t>(rng() % rows);
    DeviceBuffer d_x = to_device(ops, x), d_rows = to_device(ops, picked), d_out(ops, count * width * sizeof(float));
    ops.gather_rows(d_x.as<float>(), width, d_rows.as<int64_t>(), count, d_out.as<float>());
    const std::vector<float> got = to_host<float>(d_out, count * width);
    std::vector<double> ref(got.size());
    for (int64_t i = 0; i < count; ++i)
      for (int64_t c = 0; c < width; ++c) ref[i * width + c] = x[picked[i] * width + c];
    report.result("gather_rows", "rows=" + str(rows) + " width=" + str(width) + " picked=" + str(count), ops.name(),
                  max_rel_err(got.data(), ref.data(), ref.size()), 0.0);
  }
}

}  // namespace

void run_op_cases(BackendOps& ops, Reporter& report) {
  std::mt19937_64 rng(20250101);
  if (report.wants("embedding")) embedding_cases(ops, report, rng);
  if (report.wants("rms_norm")) rms_norm_cases(ops, report, rng);
  if (report.wants("rope")) rope_cases(ops, report, rng);
  if (report.wants("silu_mul") || report.wants("add")) elementwise_cases(ops, report, rng);
  if (report.wants("matmul")) matmul_cases(ops, report, rng);
  if (report.wants("gather_rows")) gather_cases(ops, report, rng);
}

}  // namespace podkv::backend_test
