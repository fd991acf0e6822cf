// GEMV for one token: y[rows] = W[rows, cols] · x[cols], W in its stored dtype.
//
// Decode is memory-bound: every weight byte is read once and used for 2 flops,
// so the kernel's job is to keep the memory system busy. It therefore
//  - reads W in its stored dtype and widens in registers (no float32 copy, which
//    would double or triple the bytes streamed),
//  - processes kRows rows at a time (8 with AVX-512, 4 otherwise) so each x
//    vector load (from L1) feeds several weight streams, with 2 accumulators per
//    row (≥ 8 independent FMA chains, enough to cover FMA latency 4 × 2 ports);
//    8 rows measured a few % faster than 4 on a 16-core Xeon (more streams in
//    flight per core),
//  - BF16 uses 64-byte loads split into even/odd elements by a shift and a mask
//    (x pre-split to match) instead of a widening shuffle: +5-10% per core,
//  - splits the rows over OpenMP threads in contiguous static blocks, so each
//    thread streams its own region of W sequentially (prefetcher friendly) and
//    results do not depend on the thread count (each row is summed the same way).
//
// One generic kernel is written against a tiny "Isa" interface (vector type V of
// W floats, load/widen, fma, reduce); exactly one Isa is compiled: AVX-512 (W = 16),
// AVX2 + FMA + F16C (W = 8), or plain scalar (W = 1), so the file builds anywhere.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ops/matmul.h"
#include "util/simd.h"
#include "ops/matmul_internal.h"
#include "util/dtype.h"

namespace podkv {
namespace {

// Distinct element types for the two 16-bit float formats so overloads can tell
// them apart (both are stored as uint16_t).
struct Bf16 { uint16_t bits; };
struct Half { uint16_t bits; };

inline float half_to_float(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);  // one instruction instead of the branchy software path
#else
  return f16_to_f32(h);
#endif
}

inline float scalar(float v) { return v; }
inline float scalar(Bf16 v) { return bf16_to_f32(v.bits); }
inline float scalar(Half v) { return half_to_float(v.bits); }

#if defined(__AVX512F__)
struct Isa {
  using V = __m512;
  static constexpr int W = 16;
  static constexpr int kRows = 8;  // 16 accumulators + x of the 32 zmm registers
  static const char* name() { return "avx512"; }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce(V v) { return _mm512_reduce_add_ps(v); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  // bf16 is the top half of a float32: zero-extend to 32 bits and shift left 16.
  static V load(const Bf16* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static V load(const Half* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static V load_q8(const int8_t* p) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
  }
  // 2W = 32 bf16 in one 64-byte load, viewed as 16 u32 lanes: lane i holds
  // element 2i in its low half and 2i+1 in its high half. Shifting left 16 gives
  // the even elements as floats, masking the low half gives the odd ones: two
  // cheap integer ops, no cross-lane shuffle (x is pre-split to match).
  static void load_bf16_pairs(const Bf16* p, V& even, V& odd) {
    const __m512i v = _mm512_loadu_si512(p);
    even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
};
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
struct Isa {
  using V = __m256;
  static constexpr int W = 8;
  static constexpr int kRows = 4;  // 8 accumulators: more would spill the 16 ymm registers
  static const char* name() { return "avx2"; }
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce(V v) { return reduce_add(v); }  // util/simd.h
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const Bf16* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static V load(const Half* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V load_q8(const int8_t* p) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
  static void load_bf16_pairs(const Bf16* p, V& even, V& odd) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  }
};
#else
struct Isa {
  using V = float;
  static constexpr int W = 1;
  static constexpr int kRows = 4;
  static const char* name() { return "scalar"; }
  static V zero() { return 0.0f; }
  static V set1(float v) { return v; }
  static V add(V a, V b) { return a + b; }
  static V mul(V a, V b) { return a * b; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static float reduce(V v) { return v; }
  template <class E>
  static V load(const E* p) { return scalar(*p); }
  static V load_q8(const int8_t* p) { return static_cast<float>(*p); }
  static void load_bf16_pairs(const Bf16* p, V& even, V& odd) {
    even = scalar(p[0]);
    odd = scalar(p[1]);
  }
};
#endif

using V = Isa::V;
constexpr int W = Isa::W;
constexpr int kRows = Isa::kRows;  // rows per inner loop; they share the x loads

// Each row's stream is prefetched this far ahead (software prefetch, as gemm_avx512.cpp's
// batch kernel does). A block's kRows rows are as many concurrent streams of a few KB each, which
// a server core's L2 streamer (one stream per 4 KB page, ramping up over several lines) does not
// keep ahead of: on a 2-core Xeon VM decode ran 1.2x-1.7x faster with it (README, "CPU speed").
// 1 KB (16 lines a row, 8 KB in flight a core) and 768 B measured best there, 512 B and 1.5 KB a
// few % slower. __builtin_prefetch never faults: prefetches past the matrix are harmless.
constexpr int64_t kPrefetchBytes = 1024;
// Where row r's stream goes on, kPrefetchBytes after column j, in elements from the row's
// element j: the same row, or past its end the same row of the next block (the next R rows,
// which this thread reads next under the static schedule).
template <class E, int R>
inline int64_t prefetch_offset(int64_t j, int64_t cols) {
  const int64_t d = kPrefetchBytes / static_cast<int64_t>(sizeof(E));
  return j + d < cols ? d : d + (R - 1) * cols;
}
template <int kLines, class E>
inline void prefetch_ahead(const E* p, int64_t offset) {
  const char* a = reinterpret_cast<const char*>(p + offset);
  for (int i = 0; i < kLines; ++i) __builtin_prefetch(a + 64 * i, 0, 3);
}

// out[r] = dot(W row r, x) for R rows starting at w0 (row stride `cols` elements).
// Main loop: 2·W columns per step, two accumulators per row; then one W step,
// then a scalar tail for cols % W (odd sizes like 33 or 100).
template <class E, int R>
void dot_rows(const E* w0, int64_t cols, const float* x, float* out) {
  V acc0[R], acc1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = Isa::zero();
  int64_t j = 0;
  for (; j + 2 * W <= cols; j += 2 * W) {
    const V x0 = Isa::load(x + j);
    const V x1 = Isa::load(x + j + W);
    const int64_t ahead = prefetch_offset<E, R>(j, cols);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const E* row = w0 + r * cols + j;
      prefetch_ahead<(2 * W * sizeof(E) + 63) / 64>(row, ahead);
      acc0[r] = Isa::fma(Isa::load(row), x0, acc0[r]);
      acc1[r] = Isa::fma(Isa::load(row + W), x1, acc1[r]);
    }
  }
  for (; j + W <= cols; j += W) {
    const V x0 = Isa::load(x + j);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc0[r] = Isa::fma(Isa::load(w0 + r * cols + j), x0, acc0[r]);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float s = Isa::reduce(Isa::add(acc0[r], acc1[r]));
    for (int64_t k = j; k < cols; ++k) s += scalar(w0[r * cols + k]) * x[k];
    out[r] = s;
  }
}

// BF16 rows with the even/odd split (see Isa::load_bf16_pairs). xp is x
// rearranged in groups of 2·W: [x[g+0], x[g+2], …][x[g+1], x[g+3], …]; the last
// cols % (2·W) columns use the original x in a scalar tail. Products are the
// same as dot_rows<Bf16>; only the summation order differs.
template <int R>
void dot_rows_bf16(const Bf16* w0, int64_t cols, const float* xp, const float* x, float* out) {
  V acc0[R], acc1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = Isa::zero();
  int64_t j = 0;
  for (; j + 2 * W <= cols; j += 2 * W) {
    const V xe = Isa::load(xp + j);
    const V xo = Isa::load(xp + j + W);
    const int64_t ahead = prefetch_offset<Bf16, R>(j, cols);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      V even, odd;
      prefetch_ahead<1>(w0 + r * cols + j, ahead);
      Isa::load_bf16_pairs(w0 + r * cols + j, even, odd);
      acc0[r] = Isa::fma(even, xe, acc0[r]);
      acc1[r] = Isa::fma(odd, xo, acc1[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float s = Isa::reduce(Isa::add(acc0[r], acc1[r]));
    for (int64_t k = j; k < cols; ++k) s += scalar(w0[r * cols + k]) * x[k];
    out[r] = s;
  }
}

// x[cols] → xp for dot_rows_bf16 (the full groups of 2·W only).
void split_even_odd(const float* x, int64_t cols, float* xp) {
  for (int64_t g = 0; g + 2 * W <= cols; g += 2 * W) {
    for (int i = 0; i < W; ++i) {
      xp[g + i] = x[g + 2 * i];
      xp[g + W + i] = x[g + 2 * i + 1];
    }
  }
}

// Q8_0 rows: each block is an f16 scale d and 32 int8 q. Per block and row the 32
// products q·x are summed in float (t), then acc += d · t, so d is applied once per
// block (exactly what llama.cpp's float path does). The x block (32 floats) is
// loaded once and shared by the R rows.
template <int R>
void dot_rows_q8(const uint8_t* w0, size_t row_bytes, int64_t blocks, const float* x, float* out) {
  constexpr int kSteps = kQ8BlockSize / W;
  V acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = Isa::zero();
  for (int64_t b = 0; b < blocks; ++b) {
    V xs[kSteps];
    for (int k = 0; k < kSteps; ++k) xs[k] = Isa::load(x + b * kQ8BlockSize + k * W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = w0 + r * row_bytes + b * kQ8BlockBytes;
      uint16_t d16;
      std::memcpy(&d16, blk, 2);
      const int8_t* q = reinterpret_cast<const int8_t*>(blk + 2);
      V t = Isa::mul(Isa::load_q8(q), xs[0]);
      for (int k = 1; k < kSteps; ++k) t = Isa::fma(Isa::load_q8(q + k * W), xs[k], t);
      acc[r] = Isa::fma(t, Isa::set1(half_to_float(d16)), acc[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) out[r] = Isa::reduce(acc[r]);
}

// Calls f(std::integral_constant<int, n>) for n in 1..R, so each row count gets
// its own instantiation and the accumulators stay in registers.
template <int R, class F>
void with_rows(int n, F f) {
  if constexpr (R > 1) {
    if (n < R) return with_rows<R - 1>(n, f);
  }
  f(std::integral_constant<int, R>{});
}

// Rows [row0, row0 + n) with n in 1..kRows.
template <class E>
void rows_block(const WeightMatrix& w, int64_t row0, int n, const float* x, float* out) {
  const E* w0 = static_cast<const E*>(w.data) + row0 * w.cols;
  with_rows<kRows>(n, [&](auto r) { dot_rows<E, decltype(r)::value>(w0, w.cols, x, out); });
}

// BF16 rows: `x` here is the pair {xp, x} packed by gemv_bias (see below).
struct Bf16X {
  const float* xp;
  const float* x;
};

void rows_block_bf16(const WeightMatrix& w, int64_t row0, int n, const Bf16X* x, float* out) {
  const Bf16* w0 = static_cast<const Bf16*>(w.data) + row0 * w.cols;
  with_rows<kRows>(n, [&](auto r) { dot_rows_bf16<decltype(r)::value>(w0, w.cols, x->xp, x->x, out); });
}

void rows_block_q8(const WeightMatrix& w, int64_t row0, int n, const float* x, float* out) {
  const size_t rb = w.row_bytes();
  const uint8_t* w0 = static_cast<const uint8_t*>(w.data) + row0 * rb;
  const int64_t blocks = w.cols / kQ8BlockSize;
  with_rows<kRows>(n, [&](auto r) { dot_rows_q8<decltype(r)::value>(w0, rb, blocks, x, out); });
}

template <class X, class Block>
void run_rows(const WeightMatrix& w, const X* x, float* y, const float* bias, Block block) {
  const int64_t nblocks = (w.rows + kRows - 1) / kRows;
  const int threads = w.bytes() >= detail::kParallelMinBytes ? num_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && nblocks > 1)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t r0 = b * kRows;
    const int n = static_cast<int>(std::min<int64_t>(kRows, w.rows - r0));
    float out[kRows];
    block(w, r0, n, x, out);
    for (int r = 0; r < n; ++r) y[r0 + r] = bias ? out[r] + bias[r0 + r] : out[r];
  }
}

}  // namespace

const char* matmul_isa() { return Isa::name(); }

namespace detail {

void gemv_bias(const WeightMatrix& w, const float* x, float* y, const float* bias) {
  check_weight(w, "gemv");
  switch (w.dtype) {
    case DType::F32: run_rows(w, x, y, bias, rows_block<float>); break;
    case DType::F16: run_rows(w, x, y, bias, rows_block<Half>); break;
    case DType::BF16: {
      // Split x once per call (cols floats, from L1/L2) on the calling thread;
      // the buffer is reused across calls.
      thread_local std::vector<float> xp;
      if (xp.size() < static_cast<size_t>(w.cols)) xp.resize(static_cast<size_t>(w.cols));
      split_even_odd(x, w.cols, xp.data());
      const Bf16X bx{xp.data(), x};
      run_rows(w, &bx, y, bias, rows_block_bf16);
      break;
    }
    case DType::Q8_0:
      if (!gemv_quant_int8(w, x, y, bias)) run_rows(w, x, y, bias, rows_block_q8);
      break;
    default: gemv_quant(w, x, y, bias); break;  // llama.cpp's Q types (quant_gemv.cpp)
  }
}

}  // namespace detail
}  // namespace podkv
