// GEMM for float weights (BF16, F16, F32) with AVX-512: y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias[N]).
//
// Why not the alternatives (measured on this project's Zen 5 VM, Debian's
// OpenBLAS 0.3.21): OpenBLAS treats the CPU as Haswell (AVX2 sgemm, 28-50
// GFLOP/s a core) and exports no cblas_sbgemm. vdpbf16ps (AVX512-BF16) needs
// the activations in bf16: rounding them gave a relative logit error of 3e-2 on
// the llama_bf16 fixture (the tests need 1e-4), and splitting each x into two
// bf16 parts (hi + lo, 16 mantissa bits) still left 1.3-2.7e-5 against the
// float32 paths, above the 1e-5 of the GGUF export tests, while running no
// faster than float32 FMAs (2 vdpbf16ps per column pair). So W is widened to
// float32 (exactly) inside the kernel and multiplied with float32 FMAs, as
// sgemm would, at the AVX-512 rate.
//
// Up to kDotMaxTokens tokens (a small decode batch) go through dot_kernel:
// blocks of 4 rows read straight from W (prefetching the next block) against
// groups of 4 tokens; W is read from memory once, near the streaming read
// bandwidth. More tokens use packed panels, GotoBLAS-style:
//  - threads own contiguous runs of 64-row panels of W (results do not depend on
//    the thread count: every output is summed in the same order);
//  - a panel's columns go in blocks of kCols; each block is widened and packed
//    once into [column][64 rows] float32 (128 KiB, in L2), rows past N as zeros,
//    then used by every token of the call, while the next block is prefetched;
//  - the micro-kernel holds kMr tokens × 64 rows of sums in 24 zmm: per column
//    it loads 4 zmm of W and broadcasts each token's x against them.
#include "ops/matmul_internal.h"

#if PODKV_GEMM_AVX512

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "util/simd.h"

namespace podkv::detail {
namespace {

constexpr int kPanelRows = 64;         // 4 zmm of 16 rows
constexpr int kMr = 6;                 // tokens per micro-kernel: 6 × 4 accumulators
constexpr int64_t kCols = 512;         // columns per packed block: 64 × 512 floats = 128 KiB
constexpr int64_t kDotMaxTokens = 8;   // up to this many tokens: dot_kernel, no packing

// 16 elements of W from p (the first `n` ≤ 16 of them; the rest 0) as float32.
template <DType D>
__m512 widen16(const uint8_t* p, int n) {
  const __mmask16 m = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
  if constexpr (D == DType::F32) {
    return _mm512_maskz_loadu_ps(m, p);
  } else if constexpr (D == DType::F16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  } else {  // bf16 is the top half of a float32
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
  }
}

template <DType D>
constexpr int64_t elem_bytes() { return D == DType::F32 ? 4 : 2; }

// Writes the transpose of the 16 × 16 u32 block r (row i = r[i]) to out, row q
// of the result at out + q · kPanelRows: unpacks within 128-bit lanes, then lane
// shuffles (64 shuffles per KiB, so packing keeps up with memory).
void transpose16(__m512i* r, float* out) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // r[4g + j], 128-bit lane L: rows 4g..4g+3 of column 4L + j.
  for (int g = 0; g < 16; g += 4) {
    r[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
    r[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
    r[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
    r[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i a = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88), b = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xdd);
    const __m512i c = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88), d = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xdd);
    _mm512_storeu_si512(out + j * kPanelRows, _mm512_shuffle_i32x4(a, c, 0x88));
    _mm512_storeu_si512(out + (4 + j) * kPanelRows, _mm512_shuffle_i32x4(b, d, 0x88));
    _mm512_storeu_si512(out + (8 + j) * kPanelRows, _mm512_shuffle_i32x4(a, c, 0xdd));
    _mm512_storeu_si512(out + (12 + j) * kPanelRows, _mm512_shuffle_i32x4(b, d, 0xdd));
  }
}

// Rows [n0, n0 + nr) (nr ≤ 64), columns [k0, k0 + kc) of W → buf[kc'][64] float32
// (kc' = kc rounded up to 16); rows past nr and columns past kc are zero.
template <DType D>
void pack_panel(const uint8_t* w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, float* buf) {
  constexpr int64_t eb = elem_bytes<D>();
  for (int g = 0; g < kPanelRows; g += 16) {
    for (int64_t c = 0; c < kc; c += 16) {
      const int n = static_cast<int>(std::min<int64_t>(16, kc - c));
      __m512i r[16];
      for (int i = 0; i < 16; ++i) {
        if (g + i >= nr) {
          r[i] = _mm512_setzero_si512();
          continue;
        }
        const uint8_t* p = w + ((n0 + g + i) * K + k0 + c) * eb;
        _mm_prefetch(reinterpret_cast<const char*>(p + 512), _MM_HINT_T0);  // 16 row streams: help the prefetcher
        r[i] = _mm512_castps_si512(widen16<D>(p, n));
      }
      transpose16(r, buf + c * kPanelRows + g);
    }
  }
}

// The next packed block's place in W, prefetched while this one is multiplied
// (rows of a few KiB are too short for the hardware prefetcher to ramp up).
// `base` is an address (it may lie past W's end, where a prefetch is harmless);
// 0 means none. Line i of the block: row i % 64, 64-byte line i / 64.
struct NextBlock {
  uintptr_t base = 0;
  int64_t row_bytes = 0;
  void prefetch(int64_t i) const {
    if (base == 0) return;
    const int64_t row = i & (kPanelRows - 1), line = i >> 6;
    _mm_prefetch(reinterpret_cast<const char*>(base + static_cast<uintptr_t>(row * row_bytes + line * 64)), _MM_HINT_T0);
  }
};

// y[t, 0..nr) += Σ_k buf[k] · x[t, k] for MR tokens (x row stride ldx, y ldy);
// `lines_per_col` lines of the next block are prefetched per column.
template <int MR>
void micro_kernel(const float* buf, int64_t kc, const float* x, int64_t ldx, float* y, int64_t ldy, int nr,
                  const NextBlock& next, int lines_per_col) {
  __m512 acc[MR][4];
  for (int t = 0; t < MR; ++t)
    for (int j = 0; j < 4; ++j) acc[t][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const float* b = buf + k * kPanelRows;
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
    const __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48);
    for (int i = 0; i < lines_per_col; ++i) next.prefetch(lines_per_col * k + i);
#pragma GCC unroll 6
    for (int t = 0; t < MR; ++t) {
      const __m512 xb = _mm512_set1_ps(x[t * ldx + k]);
      acc[t][0] = _mm512_fmadd_ps(b0, xb, acc[t][0]);
      acc[t][1] = _mm512_fmadd_ps(b1, xb, acc[t][1]);
      acc[t][2] = _mm512_fmadd_ps(b2, xb, acc[t][2]);
      acc[t][3] = _mm512_fmadd_ps(b3, xb, acc[t][3]);
    }
  }
  for (int t = 0; t < MR; ++t) {
    for (int j = 0; j < 4 && nr - 16 * j > 0; ++j) {
      const int left = nr - 16 * j;
      const __mmask16 m = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
      float* out = y + t * ldy + 16 * j;
      _mm512_mask_storeu_ps(out, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, out), acc[t][j]));
    }
  }
}

// 16 vectors → one vector of their horizontal sums (lane i = Σ v[i]): 45
// shuffles and adds instead of 16 separate reductions.
__m512 reduce16(const __m512* v) {
  __m512 u[8], w[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3]
    u[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int j = 0; j < 4; ++j) {  // per 128-bit lane: the lane sums of v[4j..4j+3]
    const __m512d a = _mm512_castps_pd(u[2 * j]), b = _mm512_castps_pd(u[2 * j + 1]);
    w[j] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x44), _mm512_shuffle_f32x4(w[0], w[1], 0xee));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(w[2], w[3], 0x44), _mm512_shuffle_f32x4(w[2], w[3], 0xee));
  return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xdd));
}

// out[4m + r] = dot(W row r, x token m) for R ≤ 4 rows from w0 and M ≤ 4 tokens
// (x row stride K), 16 columns per step, the last K % 16 by masked loads.
// `next` (or null) is the following block of rows, prefetched at the same offsets.
template <DType D, int R, int M>
void dot_kernel(const uint8_t* w0, const uint8_t* next, int64_t K, const float* x, float* out) {
  constexpr int64_t eb = elem_bytes<D>();
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    const int n = static_cast<int>(std::min<int64_t>(16, K - k));
    const __mmask16 m = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
    __m512 wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      if (next) _mm_prefetch(reinterpret_cast<const char*>(next + (r * K + k) * eb), _MM_HINT_T0);
      wv[r] = widen16<D>(w0 + (r * K + k) * eb, n);
    }
#pragma GCC unroll 4
    for (int t = 0; t < M; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * K + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[4 * t + r] = _mm512_fmadd_ps(wv[r], xv, acc[4 * t + r]);
    }
  }
  _mm512_storeu_ps(out, reduce16(acc));
}

template <DType D, int R>
void dot_tokens(int m, const uint8_t* w0, const uint8_t* next, int64_t K, const float* x, float* out) {
  switch (m) {
    case 1: return dot_kernel<D, R, 1>(w0, next, K, x, out);
    case 2: return dot_kernel<D, R, 2>(w0, next, K, x, out);
    case 3: return dot_kernel<D, R, 3>(w0, next, K, x, out);
    default: return dot_kernel<D, R, 4>(w0, next, K, x, out);
  }
}

// y[T, N] (+ bias) for T ≤ kDotMaxTokens: blocks of 4 rows split over threads,
// each block against every group of 4 tokens.
template <DType D>
void gemm_dot(const uint8_t* w, int64_t N, int64_t K, const float* x, int64_t T, float* y, const float* bias,
              int threads) {
  constexpr int64_t eb = elem_bytes<D>();
  const int64_t blocks = (N + 3) / 4;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = b * 4;
    const int nr = static_cast<int>(std::min<int64_t>(4, N - r0));
    const uint8_t* w0 = w + r0 * K * eb;
    for (int64_t t0 = 0; t0 < T; t0 += 4) {
      const int mt = static_cast<int>(std::min<int64_t>(4, T - t0));
      const uint8_t* next = t0 == 0 && b + 1 < blocks ? w0 + 4 * K * eb : nullptr;
      alignas(64) float out[16];
      switch (nr) {
        case 1: dot_tokens<D, 1>(mt, w0, next, K, x + t0 * K, out); break;
        case 2: dot_tokens<D, 2>(mt, w0, next, K, x + t0 * K, out); break;
        case 3: dot_tokens<D, 3>(mt, w0, next, K, x + t0 * K, out); break;
        default: dot_tokens<D, 4>(mt, w0, next, K, x + t0 * K, out); break;
      }
      for (int t = 0; t < mt; ++t)
        for (int r = 0; r < nr; ++r) y[(t0 + t) * N + r0 + r] = out[4 * t + r] + (bias ? bias[r0 + r] : 0.0f);
    }
  }
}

void run_tokens(int mr, const float* buf, int64_t kc, const float* x, int64_t ldx, float* y, int64_t ldy, int nr,
                const NextBlock& next, int lines) {
  switch (mr) {
    case 1: return micro_kernel<1>(buf, kc, x, ldx, y, ldy, nr, next, lines);
    case 2: return micro_kernel<2>(buf, kc, x, ldx, y, ldy, nr, next, lines);
    case 3: return micro_kernel<3>(buf, kc, x, ldx, y, ldy, nr, next, lines);
    case 4: return micro_kernel<4>(buf, kc, x, ldx, y, ldy, nr, next, lines);
    case 5: return micro_kernel<5>(buf, kc, x, ldx, y, ldy, nr, next, lines);
    default: return micro_kernel<kMr>(buf, kc, x, ldx, y, ldy, nr, next, lines);
  }
}

template <DType D>
void gemm_packed(const uint8_t* w, int64_t N, int64_t K, const float* x, int64_t T, float* y, const float* bias) {
  constexpr int64_t eb = elem_bytes<D>();
  const int64_t panels = (N + kPanelRows - 1) / kPanelRows;
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), panels));
#pragma omp parallel num_threads(threads)
  {
    const int th = omp_get_thread_num(), nt = omp_get_num_threads();
    thread_local std::vector<float> buf;  // one packed block per OpenMP thread
    if (buf.size() < static_cast<size_t>(kCols * kPanelRows)) buf.resize(static_cast<size_t>(kCols * kPanelRows));
    const int64_t first = panels * th / nt, last = panels * (th + 1) / nt;
    const uintptr_t wa = reinterpret_cast<uintptr_t>(w);
    for (int64_t panel = first; panel < last; ++panel) {
      const int64_t n0 = panel * kPanelRows;
      const int nr = static_cast<int>(std::min<int64_t>(kPanelRows, N - n0));
      for (int64_t t = 0; t < T; ++t) {
        float* yt = y + t * N + n0;
        if (bias) std::memcpy(yt, bias + n0, static_cast<size_t>(nr) * 4);
        else std::memset(yt, 0, static_cast<size_t>(nr) * 4);
      }
      for (int64_t k0 = 0; k0 < K; k0 += kCols) {
        const int64_t kc = std::min(kCols, K - k0);
        pack_panel<D>(w, K, n0, nr, k0, kc, buf.data());
        // The next block: this panel's next columns, else the next panel's first.
        NextBlock next;
        if (k0 + kCols < K) next = {wa + static_cast<uintptr_t>((n0 * K + k0 + kCols) * eb), K * eb};
        else if (panel + 1 < last) next = {wa + static_cast<uintptr_t>((n0 + kPanelRows) * K * eb), K * eb};
        for (int64_t t0 = 0; t0 < T; t0 += kMr) {
          const int mr = static_cast<int>(std::min<int64_t>(kMr, T - t0));
          run_tokens(mr, buf.data(), kc, x + t0 * K + k0, K, y + t0 * N + n0, N, nr, t0 == 0 ? next : NextBlock{},
                     static_cast<int>(eb));
        }
      }
    }
  }
}

template <DType D>
void gemm_typed(const WeightMatrix& w, const float* x, int64_t T, float* y, const float* bias) {
  const auto* wd = static_cast<const uint8_t*>(w.data);
  if (T <= kDotMaxTokens) {
    const int threads = w.bytes() >= 64 * 1024 ? num_threads() : 1;  // as the GEMV
    return gemm_dot<D>(wd, w.rows, w.cols, x, T, y, bias, threads);
  }
  gemm_packed<D>(wd, w.rows, w.cols, x, T, y, bias);
}

}  // namespace

bool gemm_avx512(const WeightMatrix& w, const float* x, int64_t tokens, float* y, const float* bias) {
  switch (w.dtype) {
    case DType::BF16: gemm_typed<DType::BF16>(w, x, tokens, y, bias); return true;
    case DType::F16: gemm_typed<DType::F16>(w, x, tokens, y, bias); return true;
    case DType::F32: gemm_typed<DType::F32>(w, x, tokens, y, bias); return true;
    default: return false;
  }
}

}  // namespace podkv::detail

#endif  // PODKV_GEMM_AVX512
