// GEMV for llama.cpp's block types: y[rows] = W · x with W's blocks read in
// place (layouts in util/quant.h); no float32 copy of W is ever made.
//
// Two modes (set_quant_dot, ops/matmul.h). Int8, the default, for Q4_0, Q8_0,
// Q2_K..Q6_K, IQ4_NL and IQ4_XS with AVX-512 VNNI: llama.cpp's way, x quantized to 8 bits once
// per call and integer block dot products (ops/quant_gemv_int8.cpp). Exact,
// and every other type: x stays float32 and the products are then
// exactly dequantized-weight × x, so logits
// match a dequantize-then-forward reference to float rounding (~1e-6), at the
// price of more arithmetic per weight byte. Per block the kernel unpacks the
// integer quants into 16-lane int32 vectors, converts them to float (IQ4_NL,
// IQ4_XS: looks their nibbles up in the float table of levels), and sums
// q·x; the block (or sub-block) scale multiplies that partial sum once, and
// the types with an offset (Q4_1, Q5_1: + m; Q2_K, Q4_K, Q5_K: − dmin·min) add
// offset · sum(x over the sub-block), with sum(x) over every 16 values of x
// computed once per call and shared by all rows.
//
// AVX-512 kernels for every type but the grid i-quants (IQ2_XXS .. IQ1_M); elsewhere, and for
// those, a portable path dequantizes one block at a time into a stack buffer (still in place: one
// block, not the row) and takes the dot product.
//
// Rows are split over OpenMP threads in contiguous static ranges, so each thread
// streams its own part of W and the result does not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ops/matmul.h"
#include "ops/matmul_internal.h"
#include "util/simd.h"
#include "util/error.h"
#include "util/quant.h"

namespace podkv {
namespace {

using namespace quant;

// x and the sums of its 16-value groups: xsum16[g] = x[16g] + … + x[16g + 15].
struct XView {
  const float* x;
  const float* xsum16;
};

#if defined(__AVX512F__)

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }
inline __m512i u8x16(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m512 f(__m512i v) { return _mm512_cvtepi32_ps(v); }
inline __m512 ld(const float* p) { return _mm512_loadu_ps(p); }
inline __m512i splat(int v) { return _mm512_set1_epi32(v); }
inline __m512i low4(__m512i v) { return _mm512_and_si512(v, splat(0xF)); }
inline __m512i high4(__m512i v) { return _mm512_srli_epi32(v, 4); }
// (v >> shift) & 3 for a run-time shift.
inline __m512i two_bits(__m512i v, int shift) {
  return _mm512_and_si512(_mm512_srlv_epi32(v, splat(shift)), splat(3));
}
// 32 values (two int32 vectors of 16) dotted with x[0..31].
inline __m512 dot32(__m512i a, __m512i b, const float* x) {
  return _mm512_fmadd_ps(f(b), ld(x + 16), _mm512_mul_ps(f(a), ld(x)));
}

float row_q4_0(const uint8_t* row, int64_t blocks, const XView& xv) {
  const auto* b = reinterpret_cast<const BlockQ4_0*>(row);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < blocks; ++i) {
    const __m512i q = u8x16(b[i].qs);
    const __m512 t = dot32(_mm512_sub_epi32(low4(q), splat(8)), _mm512_sub_epi32(high4(q), splat(8)), xv.x + 32 * i);
    acc = _mm512_fmadd_ps(t, _mm512_set1_ps(h2f(b[i].d)), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

float row_q4_1(const uint8_t* row, int64_t blocks, const XView& xv) {
  const auto* b = reinterpret_cast<const BlockQ4_1*>(row);
  __m512 acc = _mm512_setzero_ps();
  float offsets = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const __m512i q = u8x16(b[i].qs);
    acc = _mm512_fmadd_ps(dot32(low4(q), high4(q), xv.x + 32 * i), _mm512_set1_ps(h2f(b[i].d)), acc);
    offsets += h2f(b[i].m) * (xv.xsum16[2 * i] + xv.xsum16[2 * i + 1]);
  }
  return _mm512_reduce_add_ps(acc) + offsets;
}

// Q5: bit j of qh is the fifth bit of value j (j < 16: low nibbles, else high).
inline void q5_values(const uint8_t* qs, const uint8_t* qh_bytes, __m512i& lo, __m512i& hi) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  const __m512i q = u8x16(qs);
  lo = _mm512_mask_add_epi32(low4(q), static_cast<__mmask16>(qh & 0xFFFF), low4(q), splat(16));
  hi = _mm512_mask_add_epi32(high4(q), static_cast<__mmask16>(qh >> 16), high4(q), splat(16));
}

float row_q5_0(const uint8_t* row, int64_t blocks, const XView& xv) {
  const auto* b = reinterpret_cast<const BlockQ5_0*>(row);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < blocks; ++i) {
    __m512i lo, hi;
    q5_values(b[i].qs, b[i].qh, lo, hi);
    const __m512 t = dot32(_mm512_sub_epi32(lo, splat(16)), _mm512_sub_epi32(hi, splat(16)), xv.x + 32 * i);
    acc = _mm512_fmadd_ps(t, _mm512_set1_ps(h2f(b[i].d)), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

float row_q5_1(const uint8_t* row, int64_t blocks, const XView& xv) {
  const auto* b = reinterpret_cast<const BlockQ5_1*>(row);
  __m512 acc = _mm512_setzero_ps();
  float offsets = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    __m512i lo, hi;
    q5_values(b[i].qs, b[i].qh, lo, hi);
    acc = _mm512_fmadd_ps(dot32(lo, hi, xv.x + 32 * i), _mm512_set1_ps(h2f(b[i].d)), acc);
    offsets += h2f(b[i].m) * (xv.xsum16[2 * i] + xv.xsum16[2 * i + 1]);
  }
  return _mm512_reduce_add_ps(acc) + offsets;
}

float row_q2_k(const uint8_t* row, int64_t blocks, const XView& xv) {
  const auto* b = reinterpret_cast<const BlockQ2_K*>(row);
  __m512 acc = _mm512_setzero_ps();
  float offsets = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    const float* x = xv.x + kSuperBlock * i;
    const float* xs = xv.xsum16 + 16 * i;
    float block_offsets = 0.0f;
    for (int half = 0; half < 2; ++half) {
      const __m512i q0 = u8x16(b[i].qs + 32 * half), q1 = u8x16(b[i].qs + 32 * half + 16);
      for (int j = 0; j < 4; ++j) {
        const int is = 8 * half + 2 * j;  // sub-block of values [16·is, 16·is + 32)
        const uint8_t s0 = b[i].scales[is], s1 = b[i].scales[is + 1];
        const float* xj = x + 16 * is;
        acc = _mm512_fmadd_ps(_mm512_mul_ps(f(two_bits(q0, 2 * j)), ld(xj)), _mm512_set1_ps(d * (s0 & 0xF)), acc);
        acc = _mm512_fmadd_ps(_mm512_mul_ps(f(two_bits(q1, 2 * j)), ld(xj + 16)), _mm512_set1_ps(d * (s1 & 0xF)), acc);
        block_offsets += static_cast<float>(s0 >> 4) * xs[is] + static_cast<float>(s1 >> 4) * xs[is + 1];
      }
    }
    offsets += dmin * block_offsets;
  }
  return _mm512_reduce_add_ps(acc) - offsets;
}

float row_q3_k(const uint8_t* row, int64_t blocks, const XView& xv) {
  const auto* b = reinterpret_cast<const BlockQ3_K*>(row);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < blocks; ++i) {
    int8_t scales[16];
    q3_k_scales(b[i].scales, scales);
    const float d = h2f(b[i].d);
    const float* x = xv.x + kSuperBlock * i;
    const __m512i h0 = u8x16(b[i].hmask), h1 = u8x16(b[i].hmask + 16);
    for (int half = 0; half < 2; ++half) {
      const __m512i q0 = u8x16(b[i].qs + 32 * half), q1 = u8x16(b[i].qs + 32 * half + 16);
      for (int j = 0; j < 4; ++j) {
        const int is = 8 * half + 2 * j;
        const __m512i bit = splat(1 << (4 * half + j));
        // value = 2 bits − 4 where the hmask bit is clear
        const __m512i v0 = two_bits(q0, 2 * j), v1 = two_bits(q1, 2 * j);
        const __m512i w0 = _mm512_mask_sub_epi32(v0, _mm512_testn_epi32_mask(h0, bit), v0, splat(4));
        const __m512i w1 = _mm512_mask_sub_epi32(v1, _mm512_testn_epi32_mask(h1, bit), v1, splat(4));
        const float* xj = x + 16 * is;
        acc = _mm512_fmadd_ps(_mm512_mul_ps(f(w0), ld(xj)), _mm512_set1_ps(d * scales[is]), acc);
        acc = _mm512_fmadd_ps(_mm512_mul_ps(f(w1), ld(xj + 16)), _mm512_set1_ps(d * scales[is + 1]), acc);
      }
    }
  }
  return _mm512_reduce_add_ps(acc);
}

// Q4_K and Q5_K: chunk c of 64 values = 32 bytes of nibbles; sub-block 2c the
// low nibbles, 2c + 1 the high ones. For Q5_K, qh bit 2c / 2c + 1 adds 16.
template <bool kFiveBits>
float row_q45_k(const uint8_t* row, int64_t blocks, const XView& xv) {
  using Block = std::conditional_t<kFiveBits, BlockQ5_K, BlockQ4_K>;
  const auto* b = reinterpret_cast<const Block*>(row);
  __m512 acc = _mm512_setzero_ps();
  float offsets = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    const float* x = xv.x + kSuperBlock * i;
    const float* xs = xv.xsum16 + 16 * i;
    __m512i h0 = splat(0), h1 = splat(0);
    if constexpr (kFiveBits) {
      h0 = u8x16(b[i].qh);
      h1 = u8x16(b[i].qh + 16);
    }
    float block_offsets = 0.0f;
    for (int c = 0; c < 4; ++c) {
      uint8_t sc1, m1, sc2, m2;
      k4_scale_min(2 * c, b[i].scales, sc1, m1);
      k4_scale_min(2 * c + 1, b[i].scales, sc2, m2);
      const __m512i a = u8x16(b[i].qs + 32 * c), bb = u8x16(b[i].qs + 32 * c + 16);
      __m512i lo0 = low4(a), lo1 = low4(bb), hi0 = high4(a), hi1 = high4(bb);
      if constexpr (kFiveBits) {
        const __m512i bit_lo = splat(1 << (2 * c)), bit_hi = splat(2 << (2 * c));
        lo0 = _mm512_mask_add_epi32(lo0, _mm512_test_epi32_mask(h0, bit_lo), lo0, splat(16));
        lo1 = _mm512_mask_add_epi32(lo1, _mm512_test_epi32_mask(h1, bit_lo), lo1, splat(16));
        hi0 = _mm512_mask_add_epi32(hi0, _mm512_test_epi32_mask(h0, bit_hi), hi0, splat(16));
        hi1 = _mm512_mask_add_epi32(hi1, _mm512_test_epi32_mask(h1, bit_hi), hi1, splat(16));
      }
      acc = _mm512_fmadd_ps(dot32(lo0, lo1, x + 64 * c), _mm512_set1_ps(d * sc1), acc);
      acc = _mm512_fmadd_ps(dot32(hi0, hi1, x + 64 * c + 32), _mm512_set1_ps(d * sc2), acc);
      block_offsets += static_cast<float>(m1) * (xs[4 * c] + xs[4 * c + 1]) +
                       static_cast<float>(m2) * (xs[4 * c + 2] + xs[4 * c + 3]);
    }
    offsets += dmin * block_offsets;
  }
  return _mm512_reduce_add_ps(acc) - offsets;
}

float row_q6_k(const uint8_t* row, int64_t blocks, const XView& xv) {
  const auto* b = reinterpret_cast<const BlockQ6_K*>(row);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = h2f(b[i].d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = b[i].ql + 64 * half;
      const uint8_t* qh = b[i].qh + 32 * half;
      const int8_t* sc = b[i].scales + 8 * half;
      const float* x = xv.x + kSuperBlock * i + 128 * half;
      for (int g = 0; g < 2; ++g) {  // values l = 16g .. 16g + 15 of each quarter
        const __m512i a = u8x16(ql + 16 * g), c = u8x16(ql + 32 + 16 * g), h = u8x16(qh + 16 * g);
        const __m512i v[4] = {
            _mm512_or_si512(low4(a), _mm512_slli_epi32(_mm512_and_si512(h, splat(3)), 4)),
            _mm512_or_si512(low4(c), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, 2), splat(3)), 4)),
            _mm512_or_si512(high4(a), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, 4), splat(3)), 4)),
            _mm512_or_si512(high4(c), _mm512_slli_epi32(_mm512_srli_epi32(h, 6), 4))};
        for (int k = 0; k < 4; ++k) {
          const __m512 t = _mm512_mul_ps(f(_mm512_sub_epi32(v[k], splat(32))), ld(x + 32 * k + 16 * g));
          acc = _mm512_fmadd_ps(t, _mm512_set1_ps(d * sc[g + 2 * k]), acc);
        }
      }
    }
  }
  return _mm512_reduce_add_ps(acc);
}

// IQ4_NL and IQ4_XS: the nibbles (as Q4_0's) index the 16-level table, one vpermps per 16 values.
inline __m512 iq4_dot32(const uint8_t* qs, const float* x, __m512 table) {
  const __m512i q = u8x16(qs);
  return _mm512_fmadd_ps(_mm512_permutexvar_ps(high4(q), table), ld(x + 16),
                         _mm512_mul_ps(_mm512_permutexvar_ps(low4(q), table), ld(x)));
}
inline __m512 iq4_table() {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values))));
}

float row_iq4_nl(const uint8_t* row, int64_t blocks, const XView& xv) {
  const auto* b = reinterpret_cast<const BlockIQ4_NL*>(row);
  const __m512 table = iq4_table();
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < blocks; ++i)
    acc = _mm512_fmadd_ps(iq4_dot32(b[i].qs, xv.x + 32 * i, table), _mm512_set1_ps(h2f(b[i].d)), acc);
  return _mm512_reduce_add_ps(acc);
}

float row_iq4_xs(const uint8_t* row, int64_t blocks, const XView& xv) {
  const auto* b = reinterpret_cast<const BlockIQ4_XS*>(row);
  const __m512 table = iq4_table();
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = h2f(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      const float dl = d * static_cast<float>(iq4_xs_scale(b[i], ib));
      acc = _mm512_fmadd_ps(iq4_dot32(b[i].qs + 16 * ib, xv.x + kSuperBlock * i + 32 * ib, table), _mm512_set1_ps(dl), acc);
    }
  }
  return _mm512_reduce_add_ps(acc);
}

#endif

// Every type without its own AVX-512 kernel (all of them in the portable build; the grid i-quants
// everywhere): dequantize one block into a stack buffer, then the dot product in 8 double lanes
// (independent, so the compiler vectorises them; a serial float sum over 256 values, and float lanes,
// drifted past float rounding of the result on cancelling rows in tests/test_quant.cpp).
template <DType kType>
float row_generic(const uint8_t* row, int64_t blocks, const XView& xv) {
  constexpr int kLanes = 8;
  const int n = dtype_block_size(kType);
  const size_t bytes = dtype_block_bytes(kType);
  float values[kSuperBlock];
  double sum = 0.0;
  for (int64_t i = 0; i < blocks; ++i) {
    quant::dequantize(kType, row + i * bytes, values, 1);
    const float* x = xv.x + n * i;
    double lanes[kLanes] = {};
    for (int k = 0; k < n; k += kLanes)
      for (int l = 0; l < kLanes; ++l) lanes[l] += static_cast<double>(values[k + l]) * x[k + l];
    for (double lane : lanes) sum += lane;
  }
  return static_cast<float>(sum);
}

using RowDot = float (*)(const uint8_t*, int64_t, const XView&);

RowDot row_kernel(DType t) {
#if defined(__AVX512F__)
  switch (t) {
    case DType::Q4_0: return row_q4_0;
    case DType::Q4_1: return row_q4_1;
    case DType::Q5_0: return row_q5_0;
    case DType::Q5_1: return row_q5_1;
    case DType::Q2_K: return row_q2_k;
    case DType::Q3_K: return row_q3_k;
    case DType::Q4_K: return row_q45_k<false>;
    case DType::Q5_K: return row_q45_k<true>;
    case DType::Q6_K: return row_q6_k;
    case DType::IQ4_NL: return row_iq4_nl;
    case DType::IQ4_XS: return row_iq4_xs;
    default: break;
  }
#else
  switch (t) {
    case DType::Q4_0: return row_generic<DType::Q4_0>;
    case DType::Q4_1: return row_generic<DType::Q4_1>;
    case DType::Q5_0: return row_generic<DType::Q5_0>;
    case DType::Q5_1: return row_generic<DType::Q5_1>;
    case DType::Q2_K: return row_generic<DType::Q2_K>;
    case DType::Q3_K: return row_generic<DType::Q3_K>;
    case DType::Q4_K: return row_generic<DType::Q4_K>;
    case DType::Q5_K: return row_generic<DType::Q5_K>;
    case DType::Q6_K: return row_generic<DType::Q6_K>;
    case DType::IQ4_NL: return row_generic<DType::IQ4_NL>;
    case DType::IQ4_XS: return row_generic<DType::IQ4_XS>;
    default: break;
  }
#endif
  switch (t) {
    case DType::IQ2_XXS: return row_generic<DType::IQ2_XXS>;
    case DType::IQ2_XS: return row_generic<DType::IQ2_XS>;
    case DType::IQ2_S: return row_generic<DType::IQ2_S>;
    case DType::IQ3_XXS: return row_generic<DType::IQ3_XXS>;
    case DType::IQ3_S: return row_generic<DType::IQ3_S>;
    case DType::IQ1_S: return row_generic<DType::IQ1_S>;
    case DType::IQ1_M: return row_generic<DType::IQ1_M>;
    default: return nullptr;
  }
}

QuantDot g_quant_dot = QuantDot::Int8;

}  // namespace

void set_quant_dot(QuantDot mode) { g_quant_dot = mode; }
QuantDot quant_dot() { return g_quant_dot; }

namespace detail {

// y[r] = row_dot(row r, its block count) (+ bias[r]) over W's rows, in contiguous static ranges per thread.
template <typename RowDotFn>
void for_each_row(const WeightMatrix& w, float* y, const float* bias, const RowDotFn& row_dot) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  const size_t row_bytes = w.row_bytes();
  const int64_t blocks = w.cols / dtype_block_size(w.dtype);
  const int threads = w.bytes() >= detail::kParallelMinBytes ? num_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t r = 0; r < w.rows; ++r) {
    const float v = row_dot(base + static_cast<size_t>(r) * row_bytes, blocks);
    y[r] = bias ? v + bias[r] : v;
  }
}

void gemv_quant(const WeightMatrix& w, const float* x, float* y, const float* bias) {
  if (gemv_quant_int8(w, x, y, bias)) return;
  check_weight(w, "gemv");
  const RowDot dot = row_kernel(w.dtype);
  check(dot != nullptr, std::string("gemv: no kernel for weight dtype ") + dtype_name(w.dtype));
  thread_local std::vector<float> xsum16;
  xsum16.assign(static_cast<size_t>(w.cols / 16), 0.0f);
  for (int64_t g = 0; g < w.cols / 16; ++g) {
    float s = 0.0f;
    for (int k = 0; k < 16; ++k) s += x[16 * g + k];
    xsum16[g] = s;
  }
  const XView xv{x, xsum16.data()};
  for_each_row(w, y, bias, [&](const uint8_t* row, int64_t blocks) { return dot(row, blocks, xv); });
}

}  // namespace detail
}  // namespace podkv
