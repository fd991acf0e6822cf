// matmul dispatch (tokens == 1 → GEMV, more → GEMM), the double-precision
// reference used by the tests, and the thread-count setting shared by OpenMP
// and OpenBLAS.
#include "ops/matmul.h"

#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <string>
#include <vector>

#include "ops/matmul_internal.h"
#include "util/error.h"

namespace podkv {
namespace {

// 0 until set_num_threads is called: then the OpenMP default (OMP_NUM_THREADS or
// the core count) is used. Kept here, not only in the OpenMP ICV, because
// omp_set_num_threads affects only the calling thread; the kernels pass it to
// every parallel region explicitly (num_threads clause).
std::atomic<int> g_threads{0};

}  // namespace

namespace detail {

void check_weight(const WeightMatrix& w, const char* who) {
  const std::string at = std::string(who) + ": ";
  check(w.dtype != DType::I32 && w.dtype != DType::I64, at + "unsupported weight dtype " + dtype_name(w.dtype));
  check(w.rows > 0 && w.cols > 0,
        at + "bad weight shape [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) + "]");
  check(w.data != nullptr, at + "weight data is null");
  const int block = dtype_block_size(w.dtype);
  check(w.cols % block == 0, at + dtype_name(w.dtype) + " weight with " + std::to_string(w.cols) +
                                 " columns (must be a multiple of " + std::to_string(block) + ")");
}

}  // namespace detail

void set_num_threads(int threads) {
  check(threads >= 1, "set_num_threads: threads must be >= 1, got " + std::to_string(threads));
  g_threads.store(threads);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

int num_threads() {
  const int t = g_threads.load();
  return t > 0 ? t : omp_get_max_threads();
}

void gemv(const WeightMatrix& w, const float* x, float* y) { detail::gemv_bias(w, x, y, nullptr); }

void matmul(const WeightMatrix& w, const float* x, int64_t tokens, float* y, const float* bias) {
  check(tokens >= 1, "matmul: tokens must be >= 1, got " + std::to_string(tokens));
  if (tokens == 1) {
    detail::gemv_bias(w, x, y, bias);
  } else {
    detail::gemm(w, x, tokens, y, bias);
  }
}

void matmul_reference(const WeightMatrix& w, const float* x, int64_t tokens, float* y,
                      const float* bias) {
  detail::check_weight(w, "matmul_reference");
  std::vector<float> row(static_cast<size_t>(w.cols));
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = 0; r < w.rows; ++r) {
    to_f32(w.dtype, base + static_cast<size_t>(r) * w.row_bytes(), row.data(), row.size());
    for (int64_t t = 0; t < tokens; ++t) {
      const float* xt = x + t * w.cols;
      double s = bias ? static_cast<double>(bias[r]) : 0.0;
      for (int64_t k = 0; k < w.cols; ++k) s += static_cast<double>(row[k]) * xt[k];
      y[t * w.rows + r] = static_cast<float>(s);
    }
  }
}

}  // namespace podkv
