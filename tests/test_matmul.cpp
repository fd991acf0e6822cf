// matmul / gemv against the double-precision reference, for every weight dtype,
// odd shapes (row counts that leave 1..3 rows after the 4-row blocks, columns that
// leave scalar tails, panels that do not divide the rows), several token counts,
// with and without bias, on 1 and 2 threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_probe/bandwidth.h"
#include "ops/matmul.h"
#include "util/dtype.h"
#include "util/error.h"

namespace podkv {
namespace {

// Non-zero uniform values: magnitude in [0.1, 1], random sign.
float nonzero(std::mt19937& rng) {
  std::uniform_real_distribution<float> mag(0.1f, 1.0f);
  return (rng() & 1) ? mag(rng) : -mag(rng);
}

// A random [rows, cols] matrix encoded in `dtype` (ggml's Q8_0 quantisation for Q8_0).
std::vector<uint8_t> make_weights(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::vector<uint8_t> bytes(dtype_bytes(dtype, static_cast<size_t>(rows * cols)));
  std::vector<float> v(static_cast<size_t>(cols));
  const size_t row_bytes = dtype_bytes(dtype, static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& f : v) f = nonzero(rng);
    uint8_t* out = bytes.data() + r * row_bytes;
    for (int64_t c = 0; c < cols; ++c) {
      uint16_t h;
      switch (dtype) {
        case DType::F32: std::memcpy(out + 4 * c, &v[c], 4); break;
        case DType::F16: h = f32_to_f16(v[c]); std::memcpy(out + 2 * c, &h, 2); break;
        case DType::BF16: h = f32_to_bf16(v[c]); std::memcpy(out + 2 * c, &h, 2); break;
        default: break;
      }
    }
    if (dtype == DType::Q8_0) {
      for (int64_t b = 0; b < cols / kQ8BlockSize; ++b) {
        const float* src = v.data() + b * kQ8BlockSize;
        float amax = 0;
        for (int i = 0; i < kQ8BlockSize; ++i) amax = std::max(amax, std::fabs(src[i]));
        const float d = amax / 127.0f;
        const uint16_t d16 = f32_to_f16(d);
        uint8_t* blk = out + b * kQ8BlockBytes;
        std::memcpy(blk, &d16, 2);
        for (int i = 0; i < kQ8BlockSize; ++i)
          blk[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(src[i] / d)));
      }
    }
  }
  return bytes;
}

std::vector<float> random_vec(size_t n, std::mt19937& rng) {
  std::vector<float> v(n);
  for (auto& f : v) f = nonzero(rng);
  return v;
}

// max|got - ref| / max|ref|
double rel_error(const std::vector<float>& got, const std::vector<float>& ref) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - ref[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
  }
  return diff / scale;
}

struct MatmulCase {
  DType dtype;
  int threads;
};

std::string case_name(const ::testing::TestParamInfo<MatmulCase>& info) {
  return std::string(dtype_name(info.param.dtype)) + "_threads" + std::to_string(info.param.threads);
}

class MatmulTest : public ::testing::TestWithParam<MatmulCase> {
 protected:
  // The Q8_0 cases check the exact GEMV (the Int8 one is tested in test_quant.cpp).
  void SetUp() override {
    saved_threads_ = num_threads();
    set_num_threads(GetParam().threads);
    saved_dot_ = quant_dot();
    set_quant_dot(QuantDot::Exact);
  }
  void TearDown() override {
    set_num_threads(saved_threads_);
    set_quant_dot(saved_dot_);
  }
  QuantDot saved_dot_ = QuantDot::Int8;

  std::vector<int64_t> col_sizes() const {
    if (GetParam().dtype == DType::Q8_0) return {32, 96, 160, 1024};
    return {1, 33, 100, 160, 1024};
  }

 private:
  int saved_threads_ = 1;
};

TEST_P(MatmulTest, MatchesReference) {
  const DType dtype = GetParam().dtype;
  std::mt19937 rng(1234 + static_cast<int>(dtype));
  for (int64_t rows : {1, 3, 17, 257}) {
    for (int64_t cols : col_sizes()) {
      const auto wbytes = make_weights(dtype, rows, cols, rng);
      const WeightMatrix w{dtype, rows, cols, wbytes.data()};
      const auto bias = random_vec(static_cast<size_t>(rows), rng);
      for (int64_t tokens : {1, 2, 7, 65}) {
        const auto x = random_vec(static_cast<size_t>(tokens * cols), rng);
        for (bool with_bias : {false, true}) {
          const float* b = with_bias ? bias.data() : nullptr;
          std::vector<float> got(static_cast<size_t>(tokens * rows), NAN);
          std::vector<float> ref(got.size());
          matmul(w, x.data(), tokens, got.data(), b);
          matmul_reference(w, x.data(), tokens, ref.data(), b);
          // The GEMV sums in float with a fixed order; the GEMM is OpenBLAS's.
          const double tol = tokens == 1 ? 1e-5 : 1e-4;
          EXPECT_LT(rel_error(got, ref), tol)
              << dtype_name(dtype) << " rows=" << rows << " cols=" << cols << " tokens=" << tokens
              << " bias=" << with_bias;
        }
      }
    }
  }
}

TEST_P(MatmulTest, GemvEqualsMatmulSingleTokenAndIsThreadIndependent) {
  const DType dtype = GetParam().dtype;
  std::mt19937 rng(99);
  const int64_t rows = 1027, cols = dtype == DType::Q8_0 ? 512 : 515;  // > 64 KiB: parallel path
  const auto wbytes = make_weights(dtype, rows, cols, rng);
  const WeightMatrix w{dtype, rows, cols, wbytes.data()};
  const auto x = random_vec(static_cast<size_t>(cols), rng);
  std::vector<float> a(rows), b(rows), c(rows);
  gemv(w, x.data(), a.data());
  matmul(w, x.data(), 1, b.data());
  EXPECT_EQ(a, b);
  // Each row is summed the same way whatever the thread count: bitwise equal.
  set_num_threads(GetParam().threads == 1 ? 2 : 1);
  gemv(w, x.data(), c.data());
  EXPECT_EQ(a, c);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, MatmulTest,
                         ::testing::Values(MatmulCase{DType::F32, 1}, MatmulCase{DType::F32, 2},
                                         MatmulCase{DType::F16, 1}, MatmulCase{DType::F16, 2},
                                         MatmulCase{DType::BF16, 1}, MatmulCase{DType::BF16, 2},
                                         MatmulCase{DType::Q8_0, 1}, MatmulCase{DType::Q8_0, 2}),
                         case_name);

TEST(Matmul, LargeGemmCrossesPanels) {
  // K = 4096 → panels of 64 rows; 600 rows (300 per thread on 2) leave partial panels.
  std::mt19937 rng(7);
  for (DType dtype : {DType::BF16, DType::Q8_0}) {
    const int64_t rows = 600, cols = 4096, tokens = 5;
    const auto wbytes = make_weights(dtype, rows, cols, rng);
    const WeightMatrix w{dtype, rows, cols, wbytes.data()};
    const auto x = random_vec(static_cast<size_t>(tokens * cols), rng);
    const auto bias = random_vec(static_cast<size_t>(rows), rng);
    std::vector<float> got(static_cast<size_t>(tokens * rows)), ref(got.size());
    matmul(w, x.data(), tokens, got.data(), bias.data());
    matmul_reference(w, x.data(), tokens, ref.data(), bias.data());
    EXPECT_LT(rel_error(got, ref), 1e-4) << dtype_name(dtype);
  }
}

// With AVX-512 float weights have two GEMM kernels: up to 8 tokens straight
// from W, more through packed 64-row panels with 512-column blocks. Shapes cross
// every edge (rows past a 16/64 boundary, K past a block, K % 16 != 0); the
// tolerance would catch activations rounded to bf16 (errors ~1e-3).
TEST(Matmul, FloatGemmKernelsMatchReference) {
  std::mt19937 rng(11);
  for (DType dtype : {DType::BF16, DType::F16, DType::F32})
  for (int64_t rows : {1, 15, 64, 130}) {
    for (int64_t cols : {1, 2, 31, 33, 1025, 2049}) {
      const auto wbytes = make_weights(dtype, rows, cols, rng);
      const WeightMatrix w{dtype, rows, cols, wbytes.data()};
      const auto bias = random_vec(static_cast<size_t>(rows), rng);
      for (int64_t tokens : {2, 3, 5, 8, 9, 13}) {
        const auto x = random_vec(static_cast<size_t>(tokens * cols), rng);
        std::vector<float> got(static_cast<size_t>(tokens * rows), NAN), ref(got.size());
        matmul(w, x.data(), tokens, got.data(), bias.data());
        matmul_reference(w, x.data(), tokens, ref.data(), bias.data());
        EXPECT_LT(rel_error(got, ref), 2e-6)
            << dtype_name(dtype) << " rows=" << rows << " cols=" << cols << " tokens=" << tokens;
      }
    }
  }
}

TEST(Matmul, GemmIsThreadIndependent) {
  std::mt19937 rng(12);
  const int saved = num_threads();
  for (DType dtype : {DType::BF16, DType::F16, DType::F32}) {
    const int64_t rows = 300, cols = 1100;
    const auto wbytes = make_weights(dtype, rows, cols, rng);
    const WeightMatrix w{dtype, rows, cols, wbytes.data()};
    for (int64_t tokens : {3, 9}) {
      const auto x = random_vec(static_cast<size_t>(tokens * cols), rng);
      std::vector<float> one(static_cast<size_t>(tokens * rows)), two(one.size());
      set_num_threads(1);
      matmul(w, x.data(), tokens, one.data());
      set_num_threads(2);
      matmul(w, x.data(), tokens, two.data());
      EXPECT_EQ(one, two) << dtype_name(dtype) << " tokens=" << tokens;
    }
  }
  set_num_threads(saved);
}

TEST(Matmul, RejectsBadInput) {
  std::vector<uint8_t> data(34 * 4);
  std::vector<float> x(100), y(100);
  EXPECT_THROW(gemv(WeightMatrix{DType::Q8_0, 2, 48, data.data()}, x.data(), y.data()), Error);
  EXPECT_THROW(gemv(WeightMatrix{DType::I32, 2, 4, data.data()}, x.data(), y.data()), Error);
  EXPECT_THROW(gemv(WeightMatrix{DType::F32, 2, 4, nullptr}, x.data(), y.data()), Error);
  EXPECT_THROW(matmul(WeightMatrix{DType::F32, 2, 4, data.data()}, x.data(), 0, y.data()), Error);
  EXPECT_THROW(set_num_threads(0), Error);
}

TEST(Bandwidth, MeasuresSomethingPlausible) {
  const double copy = measure_copy_bandwidth_gbs(size_t{16} << 20, 2);
  const double read = measure_read_bandwidth_gbs(size_t{16} << 20, 2);
  EXPECT_GT(copy, 0.1);
  EXPECT_LT(copy, 10000.0);
  EXPECT_GT(read, 0.1);
  EXPECT_LT(read, 10000.0);
}

}  // namespace
}  // namespace podkv
