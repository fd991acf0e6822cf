// GEMM with BF16 weights on AVX512-BF16: y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias[N]).
//
// vdpbf16ps multiplies bf16 pairs exactly and accumulates in float32, so W is
// used as stored (no widening to float32). The activations are float32; rounding
// them to bf16 would cost ~3 significant digits (relative error ~1e-3 in the
// logits, against the 1e-4 the fixture tests need), so each x is split into two
// bf16 parts, x = hi + lo with hi = bf16(x), lo = bf16(x − hi), which keeps 16 of
// float32's 24 mantissa bits (|x − hi − lo| ≤ 2⁻¹⁷·|x|), and both parts are
// multiplied: 2 instructions per pair of columns, the float32 FMA rate. OpenBLAS
// 0.3.21 (Debian) treats this Zen 5 as Haswell (AVX2 sgemm, ~28 GFLOP/s a core)
// and has no cblas_sbgemm, so this kernel is also ~2-3× faster than the old
// widen + sgemm path.
//
// Blocking (GotoBLAS-style, sizes for 48 KiB L1 / 1 MiB L2 per core):
//  - threads own contiguous runs of 64-row panels of W (results do not depend on
//    the thread count: every output is summed in the same order);
//  - a panel's columns go in blocks of kPairs pairs (kPairs·2 columns); each block
//    is packed once into [pair][64 rows] u32 (64 × 1024 bf16 = 128 KiB, in L2),
//    rows past N as zeros, then used by every token of the call;
//  - the micro-kernel holds kMr tokens × 64 rows of float32 sums in 24 zmm: per
//    pair it loads 4 zmm of W (16 rows × 2 columns each) and broadcasts each
//    token's hi and lo pair (one u32 each) against them.
// So each weight is read from memory once per call, whatever T is.
#include "ops/matmul_internal.h"

#if PODKV_GEMM_BF16

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/matmul_simd.h"
#include "util/dtype.h"

namespace podkv::detail {
namespace {

constexpr int kPanelRows = 64;   // 4 zmm of 16 rows
constexpr int kMr = 6;           // tokens per micro-kernel: 6 × 4 accumulators
constexpr int64_t kPairs = 512;  // column pairs per packed block: 64 rows × 1024 bf16
constexpr int64_t kDotMaxTokens = 4;  // up to this many tokens: dot_kernel, no packing

// x[T, K] → xh, xl [T, P] u32, P = ceil(K / 2): pair p of token t holds columns
// 2p (low half) and 2p + 1 (high half; 0 past K) of hi and lo.
void split_x(const float* x, int64_t T, int64_t K, int64_t P, uint32_t* xh, uint32_t* xl) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * K;
    uint16_t* h = reinterpret_cast<uint16_t*>(xh + t * P);
    uint16_t* l = reinterpret_cast<uint16_t*>(xl + t * P);
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      const __m512 a = _mm512_loadu_ps(xt + k), b = _mm512_loadu_ps(xt + k + 16);
      const __m512bh hi = _mm512_cvtne2ps_pbh(b, a);  // low 16 lanes from a
      const __m512i hi_bits = reinterpret_cast<__m512i>(hi);
      // hi widened back to float32 (bf16 is the top half) and subtracted exactly.
      const __m512 hi_a = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hi_bits)), 16));
      const __m512 hi_b = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hi_bits, 1)), 16));
      const __m512bh lo = _mm512_cvtne2ps_pbh(_mm512_sub_ps(b, hi_b), _mm512_sub_ps(a, hi_a));
      _mm512_storeu_si512(h + k, hi_bits);
      _mm512_storeu_si512(l + k, reinterpret_cast<__m512i>(lo));
    }
    for (; k < K; ++k) {
      h[k] = f32_to_bf16(xt[k]);
      l[k] = f32_to_bf16(xt[k] - bf16_to_f32(h[k]));
    }
    if (K % 2) h[K] = l[K] = 0;
  }
}

// out[q][i] = in[i][q] for a 16 × 16 block of u32: in rows r0 + i (stride `ld`
// u32), out rows q with stride kPanelRows. Unpacks within 128-bit lanes, then
// 128-bit lane shuffles: 64 shuffles per KiB, so packing keeps up with memory.
void transpose16(const uint32_t* in, int64_t ld, uint32_t* out) {
  __m512i r[16], t[16];
  for (int i = 0; i < 16; ++i) {
    // W comes from memory in 16 row streams: too many for the hardware
    // prefetcher alone, so fetch 512 bytes ahead in each.
    _mm_prefetch(reinterpret_cast<const char*>(in + i * ld + 128), _MM_HINT_T0);
    r[i] = _mm512_loadu_si512(in + i * ld);
  }
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // r[4g + j], lane L: rows 4g..4g+3 of column 4L + j.
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

// Rows [n0, n0 + nr) (nr ≤ 64) and pairs [p0, p0 + pc) of W → buf[pc][64] u32;
// rows past nr and the column past an odd K are zero. Full 16 × 16 blocks go
// through transpose16 when K is even (rows are then u32-aligned in pairs).
void pack_panel(const uint16_t* w, int64_t K, int64_t n0, int nr, int64_t p0, int64_t pc, uint32_t* buf) {
  const int64_t full_pairs = std::max<int64_t>(0, std::min(pc, K / 2 - p0));  // both columns in W
  int64_t done = 0;  // pairs of rows [0, nr16) already packed
  const int nr16 = K % 2 == 0 ? nr / 16 * 16 : 0;
  const int64_t blocks16 = nr16 > 0 ? full_pairs / 16 * 16 : 0;
  for (int g = 0; g < nr16; g += 16)
    for (int64_t q = 0; q < blocks16; q += 16)
      transpose16(reinterpret_cast<const uint32_t*>(w + (n0 + g) * K) + p0 + q, K / 2, buf + q * kPanelRows + g);
  done = blocks16;
  for (int r = 0; r < kPanelRows; ++r) {
    if (r >= nr) {
      for (int64_t p = 0; p < pc; ++p) buf[p * kPanelRows + r] = 0;
      continue;
    }
    const uint16_t* row = w + (n0 + r) * K + 2 * p0;
    for (int64_t p = r < nr16 ? done : 0; p < full_pairs; ++p) {
      uint32_t v;
      std::memcpy(&v, row + 2 * p, 4);
      buf[p * kPanelRows + r] = v;
    }
    for (int64_t p = full_pairs; p < pc; ++p) buf[p * kPanelRows + r] = row[2 * p];
  }
}

// y[t, 0..nr) += Σ_p buf[p] · (xh[t, p] + xl[t, p]) for MR tokens; y row stride ldy.
template <int MR>
void micro_kernel(const uint32_t* buf, int64_t pc, const uint32_t* xh, const uint32_t* xl, int64_t P,
                  float* y, int64_t ldy, int nr) {
  __m512 acc[MR][4];
#pragma GCC unroll 6
  for (int t = 0; t < MR; ++t)
    for (int j = 0; j < 4; ++j) acc[t][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pc; ++p) {
    const uint32_t* b = buf + p * kPanelRows;
    const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b));
    const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 16));
    const __m512bh b2 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 32));
    const __m512bh b3 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 48));
#pragma GCC unroll 6
    for (int t = 0; t < MR; ++t) {
      const __m512bh h = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(xh[t * P + p])));
      const __m512bh l = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(xl[t * P + p])));
      acc[t][0] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[t][0], b0, h), b0, l);
      acc[t][1] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[t][1], b1, h), b1, l);
      acc[t][2] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[t][2], b2, h), b2, l);
      acc[t][3] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[t][3], b3, h), b3, l);
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < MR; ++t) {
    for (int j = 0; j < 4; ++j) {
      const int left = nr - 16 * j;
      if (left <= 0) break;
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

// Few tokens (decode of a small batch): out[m·4 + r] = dot(W row r, x token m)
// for R ≤ 4 rows read straight from W (no packing: each row is one sequential
// stream, W is read from memory once and the next token groups find it in
// L1/L2) and M ≤ 4 tokens, 32 columns (16 pairs) per step; the last K % 32
// columns by masked loads (x's pad column is 0).
template <int R, int M>
void dot_kernel(const uint16_t* w0, int64_t K, const uint32_t* xh, const uint32_t* xl, int64_t P, float* out) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 32) {
    const __mmask32 m = K - k >= 32 ? ~__mmask32(0) : __mmask32((1u << (K - k)) - 1);
    const __mmask16 mp = K - k >= 32 ? __mmask16(0xffff) : __mmask16((1u << ((K - k + 1) / 2)) - 1);
    __m512bh wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wv[r] = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(m, w0 + r * K + k));
#pragma GCC unroll 4
    for (int t = 0; t < M; ++t) {
      const __m512bh h = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi32(mp, xh + t * P + k / 2));
      const __m512bh l = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi32(mp, xl + t * P + k / 2));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[4 * t + r] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[4 * t + r], wv[r], h), wv[r], l);
    }
  }
  _mm512_storeu_ps(out, reduce16(acc));
}

template <int R>
void dot_tokens(int m, const uint16_t* w0, int64_t K, const uint32_t* xh, const uint32_t* xl, int64_t P, float* out) {
  switch (m) {
    case 1: return dot_kernel<R, 1>(w0, K, xh, xl, P, out);
    case 2: return dot_kernel<R, 2>(w0, K, xh, xl, P, out);
    case 3: return dot_kernel<R, 3>(w0, K, xh, xl, P, out);
    default: return dot_kernel<R, 4>(w0, K, xh, xl, P, out);
  }
}

// y[T, N] (+ bias) for T ≤ kDotMaxTokens: blocks of 4 rows split over threads,
// each block against every group of 4 tokens.
void gemm_dot(const uint16_t* w, int64_t N, int64_t K, const uint32_t* xh, const uint32_t* xl, int64_t P,
              int64_t T, float* y, const float* bias, int threads) {
  const int64_t blocks = (N + 3) / 4;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = b * 4;
    const int nr = static_cast<int>(std::min<int64_t>(4, N - r0));
    for (int64_t t0 = 0; t0 < T; t0 += 4) {
      const int mt = static_cast<int>(std::min<int64_t>(4, T - t0));
      alignas(64) float out[16];
      const uint16_t* w0 = w + r0 * K;
      const uint32_t* h = xh + t0 * P;
      const uint32_t* l = xl + t0 * P;
      switch (nr) {
        case 1: dot_tokens<1>(mt, w0, K, h, l, P, out); break;
        case 2: dot_tokens<2>(mt, w0, K, h, l, P, out); break;
        case 3: dot_tokens<3>(mt, w0, K, h, l, P, out); break;
        default: dot_tokens<4>(mt, w0, K, h, l, P, out); break;
      }
      for (int t = 0; t < mt; ++t)
        for (int r = 0; r < nr; ++r) y[(t0 + t) * N + r0 + r] = out[4 * t + r] + (bias ? bias[r0 + r] : 0.0f);
    }
  }
}

// Calls micro_kernel<mr> for mr in 1..kMr (the last tokens of T).
void run_tokens(int mr, const uint32_t* buf, int64_t pc, const uint32_t* xh, const uint32_t* xl, int64_t P,
                float* y, int64_t ldy, int nr) {
  switch (mr) {
    case 1: micro_kernel<1>(buf, pc, xh, xl, P, y, ldy, nr); break;
    case 2: micro_kernel<2>(buf, pc, xh, xl, P, y, ldy, nr); break;
    case 3: micro_kernel<3>(buf, pc, xh, xl, P, y, ldy, nr); break;
    case 4: micro_kernel<4>(buf, pc, xh, xl, P, y, ldy, nr); break;
    case 5: micro_kernel<5>(buf, pc, xh, xl, P, y, ldy, nr); break;
    default: micro_kernel<kMr>(buf, pc, xh, xl, P, y, ldy, nr); break;
  }
}

}  // namespace

void gemm_bf16(const WeightMatrix& w, const float* x, int64_t tokens, float* y, const float* bias) {
  const int64_t N = w.rows, K = w.cols, T = tokens, P = (K + 1) / 2;
  thread_local std::vector<uint32_t> xh, xl;  // calling thread's, read by the team
  if (xh.size() < static_cast<size_t>(T * P)) {
    xh.resize(static_cast<size_t>(T * P));
    xl.resize(static_cast<size_t>(T * P));
  }
  split_x(x, T, K, P, xh.data(), xl.data());
  const uint32_t* xhp = xh.data();
  const uint32_t* xlp = xl.data();
  const auto* wd = static_cast<const uint16_t*>(w.data);
  if (T <= kDotMaxTokens) {
    const int threads = w.bytes() >= 64 * 1024 ? num_threads() : 1;  // as the GEMV
    return gemm_dot(wd, N, K, xhp, xlp, P, T, y, bias, threads);
  }
  const int64_t panels = (N + kPanelRows - 1) / kPanelRows;
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), panels));
#pragma omp parallel num_threads(threads)
  {
    const int th = omp_get_thread_num(), nt = omp_get_num_threads();
    thread_local std::vector<uint32_t> buf;  // one packed block per OpenMP thread
    if (buf.size() < static_cast<size_t>(kPairs * kPanelRows)) buf.resize(static_cast<size_t>(kPairs * kPanelRows));
    for (int64_t panel = panels * th / nt; panel < panels * (th + 1) / nt; ++panel) {
      const int64_t n0 = panel * kPanelRows;
      const int nr = static_cast<int>(std::min<int64_t>(kPanelRows, N - n0));
      for (int64_t t = 0; t < T; ++t) {
        float* yt = y + t * N + n0;
        if (bias) std::memcpy(yt, bias + n0, static_cast<size_t>(nr) * 4);
        else std::memset(yt, 0, static_cast<size_t>(nr) * 4);
      }
      for (int64_t p0 = 0; p0 < P; p0 += kPairs) {
        const int64_t pc = std::min(kPairs, P - p0);
        pack_panel(wd, K, n0, nr, p0, pc, buf.data());
        for (int64_t t0 = 0; t0 < T; t0 += kMr) {
          const int mr = static_cast<int>(std::min<int64_t>(kMr, T - t0));
          run_tokens(mr, buf.data(), pc, xhp + t0 * P + p0, xlp + t0 * P + p0, P, y + t0 * N + n0, N, nr);
        }
      }
    }
  }
}

}  // namespace podkv::detail

#endif  // PODKV_GEMM_BF16
