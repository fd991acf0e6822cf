// GEMM for several tokens (prefill): y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias[N]).
//
// With T tokens each weight is used 2·T times, so this is compute-bound and goes
// to OpenBLAS sgemm. F32 weights are passed straight through (sgemm with
// transB). Other dtypes are widened to float32 one panel of rows at a time into a
// reused thread-local buffer (panel ≈ 256 rows, at most kPanelBytes), and each panel
// is one sgemm writing the y columns [p0, p0 + n) with ldc = N. The widening is
// O(N·K) against O(T·N·K) for the multiply, so its cost is shared by all T tokens.
//
// Threading: the widening runs in an OpenMP parallel-for; sgemm is always called
// from the calling thread outside any OpenMP region, so OpenBLAS (its own pthread
// pool, sized by set_num_threads) never nests inside OpenMP.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <vector>


#include "ops/matmul.h"
#include "ops/matmul_simd.h"
#include "ops/matmul_internal.h"
#include "util/dtype.h"

namespace podkv {
namespace {

constexpr int64_t kPanelRows = 256;
static size_t kPanelBytes = getenv("PODKV_PANEL_MB") ? atoll(getenv("PODKV_PANEL_MB")) << 20 : 8u << 20;  // caps the buffer for very wide K (e.g. 14336)

void widen_f16(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
#endif
  for (; i < n; ++i) d[i] = f16_to_f32(s[i]);
}

void widen_bf16(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
    _mm512_storeu_ps(d + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
  }
#elif defined(__AVX2__)
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
    _mm256_storeu_ps(d + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
  }
#endif
  for (; i < n; ++i) d[i] = bf16_to_f32(s[i]);
}

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
      case DType::F16: widen_f16(reinterpret_cast<const uint16_t*>(src), out, K); break;
      case DType::BF16: widen_bf16(reinterpret_cast<const uint16_t*>(src), out, K); break;
      case DType::Q8_0: widen_q8(src, out, K / kQ8BlockSize); break;
      default: to_f32(w.dtype, src, out, static_cast<size_t>(K)); break;  // throws
    }
  }
}

void gemm(const WeightMatrix& w, const float* x, int64_t tokens, float* y, const float* bias) {
  check_weight(w, "matmul");
  const int64_t N = w.rows, K = w.cols, T = tokens;
  // The bias goes in first and sgemm accumulates onto it (beta = 1).
  float beta = 0.0f;
  if (bias) {
    for (int64_t t = 0; t < T; ++t) std::memcpy(y + t * N, bias, static_cast<size_t>(N) * 4);
    beta = 1.0f;
  }
  if (w.dtype == DType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(N),
                static_cast<int>(K), 1.0f, x, static_cast<int>(K), static_cast<const float*>(w.data),
                static_cast<int>(K), beta, y, static_cast<int>(N));
    return;
  }
  const int64_t cap_rows = std::max<int64_t>(16, static_cast<int64_t>(kPanelBytes / (static_cast<size_t>(K) * 4)));
  static const int64_t env_rows = getenv("PODKV_PANEL_ROWS") ? atoll(getenv("PODKV_PANEL_ROWS")) : kPanelRows;  // EXPERIMENT
  const int64_t P = std::min({env_rows, cap_rows, N});
  thread_local std::vector<float> panel;  // reused across calls on this thread
  if (panel.size() < static_cast<size_t>(P * K)) panel.resize(static_cast<size_t>(P * K));
  float* buf = panel.data();
  const int threads = num_threads();
  for (int64_t p0 = 0; p0 < N; p0 += P) {
    const int64_t n = std::min(P, N - p0);
    // Widen in chunks of 8 rows (row-wise, exact) over the OpenMP team.
    const int64_t chunks = (n + 7) / 8;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t r = c * 8;
      widen_rows(w, p0 + r, std::min<int64_t>(8, n - r), buf + r * K);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(n),
                static_cast<int>(K), 1.0f, x, static_cast<int>(K), buf, static_cast<int>(K), beta,
                y + p0, static_cast<int>(N));
  }
}

}  // namespace detail
}  // namespace podkv
