// GEMM for several tokens (prefill): y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias[N]).
//
// With T tokens each weight is used 2·T times, so this is compute-bound and goes
// to OpenBLAS sgemm. F32 weights are passed straight through (one multithreaded
// sgemm with transB). Other dtypes are widened to float32 a panel of rows at a
// time (64 rows at K = 4096, ≤ 1 MiB) into a reused per-thread buffer, and each
// panel is one sgemm writing y's columns [p0, p0 + n) with ldc = N. Widening is
// O(N·K) against O(T·N·K) for the multiply: at T = 128 on 16 cores BF16/F16/Q8_0
// run at the same ~220 GFLOPS as F32.
//
// With AVX-512, float weights (BF16, F16, F32) go to gemm_avx512.cpp instead
// (2-3× faster than this path on a Zen 5, where OpenBLAS runs its AVX2 kernels).
//
// Threading: OpenMP threads own row slices and call sgemm with OpenBLAS set to
// one thread (see gemm()); the F32 path calls the multithreaded sgemm from the
// calling thread, outside any OpenMP region.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>


#include "ops/matmul.h"
#include "util/simd.h"
#include "ops/matmul_internal.h"
#include "util/dtype.h"

namespace podkv {
namespace {

constexpr int64_t kPanelRows = 256;
constexpr size_t kPanelBytes = 1u << 20;  // per thread: 64 rows at K = 4096, fits in L2

// One Q8_0 row of `blocks` blocks; value = d · q in float, as to_f32 computes it.
void widen_q8(const uint8_t* s, float* d, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = s + b * kQ8BlockBytes;
    uint16_t d16;
    std::memcpy(&d16, blk, 2);
#if defined(__F16C__)
    const float scale = _cvtsh_ss(d16);
#else
    const float scale = f16_to_f32(d16);
#endif
    const int8_t* q = reinterpret_cast<const int8_t*>(blk + 2);
    float* out = d + b * kQ8BlockSize;
    for (int i = 0; i < kQ8BlockSize; ++i) out[i] = scale * static_cast<float>(q[i]);
  }
}

}  // namespace

namespace detail {

void widen_rows(const WeightMatrix& w, int64_t row0, int64_t count, float* dst) {
  const int64_t K = w.cols;
  const auto* base = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(row0) * w.row_bytes();
  for (int64_t r = 0; r < count; ++r) {
    const uint8_t* src = base + static_cast<size_t>(r) * w.row_bytes();
    float* out = dst + r * K;
    switch (w.dtype) {
      case DType::F32: std::memcpy(out, src, static_cast<size_t>(K) * 4); break;
      case DType::Q8_0: widen_q8(src, out, K / kQ8BlockSize); break;
      default: to_f32(w.dtype, src, out, static_cast<size_t>(K)); break;  // throws
    }
  }
}

void gemm(const WeightMatrix& w, const float* x, int64_t tokens, float* y, const float* bias) {
  check_weight(w, "matmul");
#if PODKV_GEMM_AVX512
  if (gemm_avx512(w, x, tokens, y, bias)) return;
#endif
  const int64_t N = w.rows, K = w.cols, T = tokens;
  // The bias goes in first and sgemm accumulates onto it (beta = 1).
  float beta = 0.0f;
  if (bias) {
    for (int64_t t = 0; t < T; ++t) std::memcpy(y + t * N, bias, static_cast<size_t>(N) * 4);
    beta = 1.0f;
  }
  // Panels of P rows at multiples of P, widened (F32: read in place) into a per-thread buffer and
  // multiplied with a single-threaded sgemm (y[:, p0:p0+P] = x · panelᵀ); the panel (≈ kPanelBytes)
  // stays in L2 between being written and being read by sgemm. The panels do not depend on the
  // thread count: sgemm's sum for a column depends on where the column falls in its call's tiles
  // (OpenBLAS's edge kernels add in another order), so panels cut at each thread's slice of rows
  // (as before session 36), or one multithreaded sgemm for F32, gave results that changed with
  // the thread count (Matmul.GemmIsThreadIndependent, on builds without the AVX-512 GEMM). OpenBLAS
  // is switched to one thread for the duration: alternating an OpenMP widening region with a
  // multithreaded sgemm leaves each pool's idle threads spinning on the cores the other needs
  // (measured 3-10× slower on 16 cores).
  const int64_t cap_rows = static_cast<int64_t>(kPanelBytes / (static_cast<size_t>(K) * 4));
  const int64_t P = std::clamp<int64_t>(cap_rows, 16, kPanelRows);
  const int64_t panels = (N + P - 1) / P;
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), panels));
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel num_threads(threads)
  {
    thread_local std::vector<float> panel;  // one per OpenMP thread, reused across calls
    if (w.dtype != DType::F32 && panel.size() < static_cast<size_t>(P * K)) panel.resize(static_cast<size_t>(P * K));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < panels; ++i) {
      const int64_t p0 = i * P, n = std::min(P, N - p0);
      const bool in_place = w.dtype == DType::F32;
      if (!in_place) widen_rows(w, p0, n, panel.data());
      const float* rows = in_place ? static_cast<const float*>(w.data) + p0 * K : panel.data();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(n),
                  static_cast<int>(K), 1.0f, x, static_cast<int>(K), rows, static_cast<int>(K), beta, y + p0,
                  static_cast<int>(N));
    }
  }
  openblas_set_num_threads(blas_threads);
}

}  // namespace detail
}  // namespace podkv
