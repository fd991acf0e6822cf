// The Int8 decode GEMV (QuantDot::Int8, ops/matmul.h): llama.cpp's fast path
// for Q4_0, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS weights with
// AVX-512 VNNI and VBMI.
//
// x is quantized once per call to blocks of 32 int8 (q̂ = round(x / d), d =
// max|x| / 127 over the block, so |x − d·q̂| ≤ max|x| / 254) and each weight
// block's dot product with it is integer: _mm512_dpbusd_epi32 sums
// unsigned-byte × signed-byte products, four per int32 lane. The weights go in
// as the unsigned operand (Q4_0 and Q4_K nibbles as they are, Q2_K's 2-bit,
// Q3_K's 3-bit, Q5_K's 5-bit and Q6_K's 6-bit values, Q8_0 bytes with 128 added,
// IQ4_NL's and IQ4_XS's nibbles mapped by vpshufb to their levels + 128); the bias this leaves (8, 32 or 128
// times the sum of x̂ over the lane; Q3_K 4) is taken off through the
// accumulator's starting value. Q2_K's, Q4_K's and Q5_K's mins use the
// sub-block sums of x̂ (d·Σq̂), as llama.cpp does. So the only difference from the exact path is x's rounding: per row
// Σ_j w_j·(x̂_j − x_j), at most Σ_j |w_j| · max|x|_block(j) / 254.
//
// What makes it run near the memory bandwidth (decode reads each weight byte
// once, so bytes / time is the figure of merit):
// - x is laid out once per call in the order each type's bytes unpack to
//   (Q4_0 and IQ4_NL: four blocks' low nibbles, then their high nibbles, as IQ4_XS's
//   two halves; Q4_K and Q5_K:
//   sub-blocks 0 2 1 3 4 6 5 7; Q2_K and Q3_K: by 2-bit field of the 64 bytes
//   of qs), with x's per-lane bias and block scales expanded to the
//   lanes they meet, so the weight bytes are never shuffled to match x;
// - the int32 block sums become float once per 64-byte vector (four Q4_0 or
//   two Q8_0 blocks, two Q4_K / four Q6_K sub-blocks) and are scaled by a
//   per-lane vector d_w·d_x, built with vpermw / vpermps from the block headers
//   (Q4_0, Q4_K, Q6_K; for Q8_0's two scales a vpermw and a 16-lane fp16
//   conversion measured ~10% slower than two scalar ones and a blend); Q4_K's
//   twelve scale bytes are unpacked in one 128-bit register;
// - Q4_0 / Q8_0 blocks (18 / 34 bytes) are gathered from unaligned 64-byte
//   loads with one vpermi2b, and the last, partial group uses masked loads, so
//   no byte past the row is read;
// - two accumulators per row, and the sums of four rows reduced together;
// - each thread reads a contiguous range of rows, one row after another.
//
// Tried and dropped: taking four rows side by side so they share x's loads.
// Cache-resident it was faster, but from memory it ran at half the speed (the
// prefetchers follow one sequential stream per thread, not four interleaved
// ones), and software prefetching did not recover it. The first Int8 version
// (one row at a time, two blocks per vector, scalar fp16 scale conversions and
// eight scalar Q4_K scale unpacks per super-block, one accumulator) was
// compute-bound: k4_scale_min alone was 12% of a Q4_K decode profile.
#include "ops/matmul.h"
#include "ops/matmul_internal.h"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && \
    defined(__AVX512VBMI__)
#define PODKV_QUANT_INT8 1
#endif

#if defined(PODKV_QUANT_INT8)
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#include "util/simd.h"
#include "util/quant.h"
#endif

namespace podkv::detail {

#if defined(PODKV_QUANT_INT8)
namespace {

using namespace quant;

// x for four Q4_0 blocks (128 values), in the order one 64-byte load of their
// nibbles unpacks to; also four IQ4_NL blocks, or half an IQ4_XS super-block (the same nibble order).
struct alignas(64) Q4_0Group {
  int8_t lo[64];       // lo[16k + j] = x̂ value j of block k (j < 16): the low nibbles
  int8_t hi[64];       // hi[16k + j] = x̂ value 16 + j of block k: the high nibbles
  int32_t offset[16];  // lane 4k: −bias · Σ x̂ over block k (Q4_0's nibbles 8, IQ4's levels 128); other lanes 0
  float d[16];         // lanes 4k .. 4k + 3: block k's scale
};

// x for one Q4_K super-block (256 values = 8 sub-blocks of 32 = 8 blocks of x).
struct alignas(64) Q4_KSuper {
  int8_t q[256];    // x̂ of sub-blocks 0 2 | 1 3 | 4 6 | 5 7 (32 each): low nibbles of qs[0..63],
                    // high ones, low of qs[64..127], high
  float d_sum[16];  // lane 2j: sub-block j's scale d; lane 2j + 1: −d·Σq̂ over it (the min term)
};

// x for one Q2_K / Q3_K super-block in the order one 64-byte load of its 2-bit fields unpacks to:
// the fields at bits 2k of byte i are value 32k + i (i < 32) and 128 + 32k + i − 32 (i >= 32).
struct alignas(64) Q23_KSuper {
  int8_t q[256];       // q[64k + i]: x̂ of that value
  int32_t offset[64];  // lane 16k + l: −bias · Σ x̂ over its four values (Q3_K: bias 4; Q2_K: 0)
  float d[64];         // lane 16k + l: the scale of its x block (k, or 4 + k for l >= 8)
};

// 64-byte aligned storage, so that no 64-byte load of x crosses a cache line
// (a split load costs two).
template <typename T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <typename U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  bool operator==(const Aligned64&) const { return true; }
};
template <typename T>
using AlignedVector = std::vector<T, Aligned64<T>>;

// x quantized for one call; built by the calling thread, read by all.
struct XInt8 {
  AlignedVector<int8_t> q;         // [padded cols]: x̂ in natural order, zero past cols
  std::vector<float> d;            // [padded blocks]: the block scales (0 past cols)
  AlignedVector<int32_t> lanesum;  // [padded cols / 4]: q̂[4l] + … + q̂[4l + 3]
  AlignedVector<int32_t> offset;   // [padded cols / 4]: −bias · lanesum (Q8_0: 128, Q6_K: 32)
  AlignedVector<float> dlane;      // [padded cols / 4]: the scale of lane l's block
  AlignedVector<float> sum16;      // [padded cols / 16]: −d·Σq̂ over each 16 values (Q2_K's min term)
  std::vector<Q4_0Group> q4_0;   // [padded blocks / 4]
  std::vector<Q4_KSuper> q4_k;   // [padded cols / 256]
  std::vector<Q23_KSuper> q23_k;  // [padded cols / 256]
};

// Natural order: x̂, d and the lane sums; cols padded to whole super-blocks.
void quantize_x(const float* x, int64_t cols, XInt8& qx) {
  const int64_t padded = (cols + kSuperBlock - 1) / kSuperBlock * kSuperBlock;
  const int64_t blocks = cols / kBlock;
  qx.q.assign(static_cast<size_t>(padded), 0);
  qx.d.assign(static_cast<size_t>(padded / kBlock), 0.0f);
  qx.lanesum.resize(static_cast<size_t>(padded / 4));
  for (int64_t b = 0; b < blocks; ++b) {
    const __m512 a = _mm512_loadu_ps(x + 32 * b), c = _mm512_loadu_ps(x + 32 * b + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(c)));
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    // round to nearest (even on ties): |x − d·q̂| ≤ d / 2 = max|x| / 254
    const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, _mm512_set1_ps(id)));
    const __m512i qc = _mm512_cvtps_epi32(_mm512_mul_ps(c, _mm512_set1_ps(id)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qx.q.data() + 32 * b), _mm512_cvtsepi32_epi8(qa));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qx.q.data() + 32 * b + 16), _mm512_cvtsepi32_epi8(qc));
    qx.d[static_cast<size_t>(b)] = amax / 127.0f;
  }
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t i = 0; i < padded; i += 64) {  // four int8 per lane summed by one dpbusd
    const __m512i q = _mm512_loadu_si512(qx.q.data() + i);
    _mm512_storeu_si512(qx.lanesum.data() + i / 4, _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, q));
  }
}

int32_t block_sum(const XInt8& qx, int64_t b) {
  int32_t s = 0;
  for (int l = 0; l < 8; ++l) s += qx.lanesum[static_cast<size_t>(8 * b + l)];
  return s;
}

// Q8_0 and Q6_K: natural order, −bias · lanesum and the lane scales.
void prepare_natural(XInt8& qx, int32_t bias) {
  const size_t lanes = qx.lanesum.size();
  qx.offset.resize(lanes);
  qx.dlane.resize(lanes);
  for (size_t l = 0; l < lanes; ++l) {
    qx.offset[l] = -bias * qx.lanesum[l];
    qx.dlane[l] = qx.d[l / 8];
  }
}

// Q2_K and Q3_K: x in Q23_KSuper order, with Q3_K's bias of 4; Q2_K also −d·Σq̂ per 16 values
// (natural order) for the sub-blocks' mins.
void prepare_q23_k(XInt8& qx, bool three_bits) {
  const int32_t bias = three_bits ? 4 : 0;
  const size_t supers = qx.q.size() / kSuperBlock;
  qx.q23_k.resize(supers);
  for (size_t s = 0; s < supers; ++s) {
    Q23_KSuper& x = qx.q23_k[s];
    for (int k = 0; k < 4; ++k)
      for (int half = 0; half < 2; ++half) {
        const size_t first = kSuperBlock * s + 128 * half + 32 * k;  // the 32 values of this half
        std::copy(qx.q.data() + first, qx.q.data() + first + 32, x.q + 64 * k + 32 * half);
        for (int l = 0; l < 8; ++l) {
          x.offset[16 * k + 8 * half + l] = -bias * qx.lanesum[first / 4 + l];
          x.d[16 * k + 8 * half + l] = qx.d[first / kBlock];
        }
      }
  }
  if (three_bits) return;
  qx.sum16.resize(qx.lanesum.size() / 4);
  for (size_t s = 0; s < qx.sum16.size(); ++s) {
    const int32_t sum = qx.lanesum[4 * s] + qx.lanesum[4 * s + 1] + qx.lanesum[4 * s + 2] + qx.lanesum[4 * s + 3];
    qx.sum16[s] = -qx.d[s / 2] * static_cast<float>(sum);
  }
}

// Q4_0 (bias 8) and IQ4_NL / IQ4_XS (bias 128: their levels + 128 go in as the unsigned operand).
void prepare_q4_0(XInt8& qx, int32_t bias) {
  const size_t groups = qx.d.size() / 4;
  qx.q4_0.assign(groups, Q4_0Group{});
  for (size_t g = 0; g < groups; ++g) {
    Q4_0Group& x = qx.q4_0[g];
    for (int k = 0; k < 4; ++k) {
      const int64_t b = static_cast<int64_t>(4 * g) + k;
      const int8_t* src = qx.q.data() + 32 * b;
      std::copy(src, src + 16, x.lo + 16 * k);
      std::copy(src + 16, src + 32, x.hi + 16 * k);
      x.offset[4 * k] = -bias * block_sum(qx, b);
      std::fill(x.d + 4 * k, x.d + 4 * k + 4, qx.d[static_cast<size_t>(b)]);
    }
  }
}

void prepare_q4_k(XInt8& qx) {
  const size_t supers = qx.q.size() / kSuperBlock;
  qx.q4_k.assign(supers, Q4_KSuper{});
  constexpr int kOrder[8] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (size_t s = 0; s < supers; ++s) {
    Q4_KSuper& x = qx.q4_k[s];
    for (int k = 0; k < 8; ++k) {
      const int8_t* src = qx.q.data() + kSuperBlock * s + 32 * kOrder[k];
      std::copy(src, src + 32, x.q + 32 * k);
      const int64_t b = static_cast<int64_t>(8 * s) + k;
      const float d = qx.d[static_cast<size_t>(b)];
      x.d_sum[2 * k] = d;
      x.d_sum[2 * k + 1] = -d * static_cast<float>(block_sum(qx, b));
    }
  }
}


// Byte index tables for vpermi2b / vpermb (index bit 6 picks the second source).
struct Tables {
  uint8_t q4_0_qs[64];  // 16k + j → byte 18k + 2 + j: the nibbles of four Q4_0 blocks
  uint8_t q8_0_qs[64];  // j → byte 2 + j, 32 + j → byte 36 + j of (row, row + 4): two Q8_0 blocks
  Tables() {
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 16; ++j) q4_0_qs[16 * k + j] = static_cast<uint8_t>(18 * k + 2 + j);
    for (int j = 0; j < 32; ++j) {
      q8_0_qs[j] = static_cast<uint8_t>(2 + j);
      q8_0_qs[32 + j] = static_cast<uint8_t>(64 + 32 + j);  // byte 36 + j = byte 32 + j of row + 4
    }
  }
};
const Tables kTables;

// 16-bit lanes holding `first` in the low 256 bits, `second` in the high: per-half shift counts.
inline __m512i per_half(short first, short second) {
  return _mm512_inserti64x4(_mm512_set1_epi16(first), _mm256_set1_epi16(second), 1);
}

// Each row_* function returns a vector whose lanes sum to one row · x̂. They
// keep two accumulators (even and odd steps): a single one makes every step
// wait for the previous step's fused multiply-add (4 cycles each), which on
// short rows (768 columns: 3 Q4_K super-blocks) left the kernel latency-bound.

// IQ4_NL's and IQ4_XS's levels + 128 (1 .. 241), so that they go into dpbusd as unsigned bytes, in all
// four 128-bit lanes: vpshufb maps each nibble straight to its level.
inline __m512i iq4_unsigned_levels() {
  alignas(16) uint8_t u[16];
  for (int i = 0; i < 16; ++i) u[i] = static_cast<uint8_t>(kIq4Values[i] + 128);
  return _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(u)));
}

// Q4_0 (and IQ4_NL, kLevels: the same 18-byte block, the nibbles looked up in the level table), four
// blocks (72 bytes) per step: vpermi2b gathers their 64 nibble bytes, vpermw their four fp16 scales to
// lanes 4k .. 4k + 3.
template <bool kLevels>
struct Q4_0Kernel {
  const __m512i qs_index = _mm512_loadu_si512(kTables.q4_0_qs);
  const __m512i d_index = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                           27, 27, 27, 27, 18, 18, 18, 18, 9, 9, 9, 9, 0, 0, 0, 0);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i levels = kLevels ? iq4_unsigned_levels() : _mm512_setzero_si512();

  __m512 step(__m512i a, __m512i b, const Q4_0Group& x, __m512 acc) const {
    const __m512i q = _mm512_permutex2var_epi8(a, qs_index, b);
    __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    if constexpr (kLevels) {
      lo = _mm512_shuffle_epi8(levels, lo);
      hi = _mm512_shuffle_epi8(levels, hi);
    }
    // Σ (q_w − bias)·q̂ = Σ q_w·q̂ − bias·Σ q̂ (bias 8, or 128 for the levels): the offset lanes start the sum
    __m512i dot = _mm512_dpbusd_epi32(_mm512_load_si512(x.offset), lo, _mm512_load_si512(x.lo));
    dot = _mm512_dpbusd_epi32(dot, hi, _mm512_load_si512(x.hi));
    const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(d_index, a)));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_load_ps(x.d)), acc);
  }
  __m512 row(const uint8_t* p, int64_t blocks, const XInt8& qx) const {
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    const int64_t full = blocks / 4;
    for (int64_t g = 0; g < full; ++g, p += 72) {
      const __m512i tail = _mm512_zextsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 64)));
      acc[g & 1] = step(_mm512_loadu_si512(p), tail, qx.q4_0[static_cast<size_t>(g)], acc[g & 1]);
    }
    if (const int64_t rest = blocks - 4 * full; rest > 0) {  // 1-3 blocks, ≤ 54 bytes; x is zero past them
      const __mmask64 mask = (__mmask64{1} << (18 * rest)) - 1;
      acc[1] = step(_mm512_maskz_loadu_epi8(mask, p), _mm512_setzero_si512(), qx.q4_0[static_cast<size_t>(full)], acc[1]);
    }
    return _mm512_add_ps(acc[0], acc[1]);
  }
};

// Q8_0, two blocks (68 bytes) per step: two 256-bit loads of their quants; a
// last, odd block through masked loads of bytes 0-63 and 4-67, one vpermi2b
// for its quants and one vpermw for its scale (word 0).
struct Q8_0Kernel {
  const __m512i qs_index = _mm512_loadu_si512(kTables.q8_0_qs);
  const __m512i d_index = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                           17, 17, 17, 17, 17, 17, 17, 17, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));

  __m512 step(__m512i a, __m512i b, const XInt8& qx, int64_t i, __m512 acc) const {
    const __m512i v = _mm512_xor_si512(_mm512_permutex2var_epi8(a, qs_index, b), flip);  // q + 128
    // Σ q_w·q̂ = Σ (q_w + 128)·q̂ − 128·Σ q̂
    const __m512i dot =
        _mm512_dpbusd_epi32(_mm512_loadu_si512(qx.offset.data() + 8 * i), v, _mm512_loadu_si512(qx.q.data() + 32 * i));
    const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(d_index, a)));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_loadu_ps(qx.dlane.data() + 8 * i)), acc);
  }
  // Two whole blocks: their quants by two 256-bit loads, the scales by vpermw.
  __m512 step2(const uint8_t* p, const XInt8& qx, int64_t i, __m512 acc) const {
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2))),
                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + kQ8BlockBytes + 2)), 1);
    const __m512i v = _mm512_xor_si512(q, flip);  // q + 128
    const __m512i dot =
        _mm512_dpbusd_epi32(_mm512_load_si512(qx.offset.data() + 8 * i), v, _mm512_load_si512(qx.q.data() + 32 * i));
    uint16_t d0, d1;
    std::memcpy(&d0, p, 2);
    std::memcpy(&d1, p + kQ8BlockBytes, 2);
    const __m512 sc = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(_cvtsh_ss(d0) * qx.d[static_cast<size_t>(i)]),
                                           _mm512_set1_ps(_cvtsh_ss(d1) * qx.d[static_cast<size_t>(i) + 1]));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc);
  }
  __m512 row(const uint8_t* p, int64_t blocks, const XInt8& qx) const {
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 2 <= blocks; i += 2, p += 2 * kQ8BlockBytes)
      acc[(i / 2) & 1] = step2(p, qx, i, acc[(i / 2) & 1]);
    if (i < blocks) {  // the last block alone (34 bytes); x is zero past it
      const __mmask64 mask = (__mmask64{1} << kQ8BlockBytes) - 1;
      acc[1] = step(_mm512_maskz_loadu_epi8(mask, p), _mm512_maskz_loadu_epi8(mask >> 4, p + 4), qx, i, acc[1]);
    }
    return _mm512_add_ps(acc[0], acc[1]);
  }
};

// Q4_K's 12 scale bytes (at p) as 16: the eight 6-bit scales, then the eight
// mins (k4_scale_min, done on four 32-bit lanes at once as llama.cpp does).
inline __m128i q4_k_scales_mins(const uint8_t* p) {
  const __m128i u = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));  // u0 u1 u2 (+ 4 bytes of qs)
  constexpr int k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
  // scales 0-3 = u0 & k1; 4-7 = (u2 & k2) | ((u0 >> 6) & k3) << 4;
  // mins 0-3 = u1 & k1; 4-7 = ((u2 >> 4) & k2) | ((u1 >> 6) & k3) << 4
  const __m128i a = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 1, 2, 0));  // u0 u2 u1 u2
  const __m128i b = _mm_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0));  // u0 u0 u1 u1
  const __m128i low = _mm_and_si128(_mm_srlv_epi32(a, _mm_set_epi32(4, 0, 0, 0)), _mm_set_epi32(k2, k1, k2, k1));
  const __m128i high = _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(b, 6), _mm_set_epi32(k3, 0, k3, 0)), 4);
  return _mm_or_si128(low, high);
}

// Q4_K, one super-block (144 bytes) per step: four dpbusd cover its eight
// sub-blocks two at a time; the per-lane scale is (sub-block scale · d) · d_x,
// the min term (min · dmin) · (−d_x·Σq̂) summed in the odd lanes. Q5_K (176
// bytes: qh[32] before the nibbles) likewise, each nibble's fifth bit moved from
// qh to bit 4: for value 64c + l (low nibble of qs[32c + l]) bit 2c of qh[l], for
// 64c + 32 + l (high nibble) bit 2c + 1. A 64-byte load of the nibbles holds
// chunks 2h (bytes 0-31) and 2h + 1 (32-63), so a 16-bit shift of qh, by a count
// per 256-bit half, brings bit s to bit 4 in every byte (s <= 4 left by 4 − s,
// else right by s − 4; the bits a word shift carries across bytes are masked off).
template <bool kFiveBits>
struct Q45_KKernel {
  using Block = std::conditional_t<kFiveBits, BlockQ5_K, BlockQ4_K>;
  static constexpr int kNibbles = kFiveBits ? 48 : 16;  // byte offset of qs
  const __m512i m4 = _mm512_set1_epi8(0x0F), m16 = _mm512_set1_epi8(0x10);
  // Half 0: low nibbles bits 0 | 2, high 1 | 3 (left shifts); half 1: low 4 | 6, high 5 | 7 (right).
  const __m512i shift[2][2] = {{per_half(4, 2), per_half(3, 1)}, {per_half(0, 2), per_half(1, 3)}};
  // s below has sub-block j's scale·d·d_x at lane 2j; dot k's sub-blocks are 0 2, 1 3, 4 6, 5 7
  const __m512i sel[4] = {_mm512_set_epi32(4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0),
                          _mm512_set_epi32(6, 6, 6, 6, 6, 6, 6, 6, 2, 2, 2, 2, 2, 2, 2, 2),
                          _mm512_set_epi32(12, 12, 12, 12, 12, 12, 12, 12, 8, 8, 8, 8, 8, 8, 8, 8),
                          _mm512_set_epi32(14, 14, 14, 14, 14, 14, 14, 14, 10, 10, 10, 10, 10, 10, 10, 10)};

  __m512 row(const uint8_t* p, int64_t blocks, const XInt8& qx) const {
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t i = 0; i < blocks; ++i, p += sizeof(Block)) {
      const Q4_KSuper& x = qx.q4_k[static_cast<size_t>(i)];
      const __m128i sm = q4_k_scales_mins(p + 4);
      // lanes 2j, 2j + 1: scale j, min j (as float) × d, dmin × d_x, −d_x·Σq̂
      const __m512 scale_min = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(sm, _mm_srli_si128(sm, 8))));
      uint32_t d_dmin;
      std::memcpy(&d_dmin, p, 4);
      const __m512 dd = _mm512_cvtph_ps(_mm256_set1_epi32(static_cast<int>(d_dmin)));
      const __m512 s = _mm512_mul_ps(_mm512_mul_ps(scale_min, dd), _mm512_load_ps(x.d_sum));
      acc[0] = _mm512_mask_add_ps(acc[0], 0xAAAA, acc[0], s);  // the mins' term
      for (int h = 0; h < 2; ++h) {
        const __m512i q = _mm512_loadu_si512(p + kNibbles + 64 * h);
        __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
        if constexpr (kFiveBits) {
          const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
          const __m512i bit_lo = h == 0 ? _mm512_sllv_epi16(qh, shift[0][0]) : _mm512_srlv_epi16(qh, shift[1][0]);
          const __m512i bit_hi = h == 0 ? _mm512_sllv_epi16(qh, shift[0][1]) : _mm512_srlv_epi16(qh, shift[1][1]);
          lo = _mm512_or_si512(lo, _mm512_and_si512(bit_lo, m16));
          hi = _mm512_or_si512(hi, _mm512_and_si512(bit_hi, m16));
        }
        const __m512i dlo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_load_si512(x.q + 128 * h));
        const __m512i dhi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, _mm512_load_si512(x.q + 128 * h + 64));
        acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dlo), _mm512_permutexvar_ps(sel[2 * h], s), acc[0]);
        acc[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dhi), _mm512_permutexvar_ps(sel[2 * h + 1], s), acc[1]);
      }
    }
    return _mm512_add_ps(acc[0], acc[1]);
  }
};

// Q6_K, one super-block (210 bytes) per step: per half, 64 bytes of ql and 32
// of qh unpack to values 0-63 and 64-127 of the half in natural order (so x̂ is
// read as it is); four int8 scales of 16 values per 64-value vector.
struct Q6_KKernel {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  // qh bits 0-1 (first 32 bytes) and 2-3 (second 32) to bits 4-5; bits 4-5 and 6-7 likewise
  const __m512i shl = _mm512_set_epi64(0x0002000200020002, 0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
                                       0x0004000400040004, 0x0004000400040004, 0x0004000400040004, 0x0004000400040004);
  const __m512i shr = _mm512_set_epi64(0x0002000200020002, 0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
                                       0, 0, 0, 0);
  // lane l of vector v uses scale 4v + l / 4
  const __m512i sel[4] = {_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
                          _mm512_set_epi32(7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4),
                          _mm512_set_epi32(11, 11, 11, 11, 10, 10, 10, 10, 9, 9, 9, 9, 8, 8, 8, 8),
                          _mm512_set_epi32(15, 15, 15, 15, 14, 14, 14, 14, 13, 13, 13, 13, 12, 12, 12, 12)};

  __m512 row(const uint8_t* p, int64_t blocks, const XInt8& qx) const {
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t i = 0; i < blocks; ++i, p += sizeof(BlockQ6_K)) {
      const int8_t* xq = qx.q.data() + kSuperBlock * i;
      const int32_t* off = qx.offset.data() + 64 * i;
      const float* dl = qx.dlane.data() + 64 * i;
      uint16_t d16;
      std::memcpy(&d16, p + 208, 2);
      const __m512 sc = _mm512_mul_ps(
          _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192)))),
          _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<short>(d16))));
      for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512(p + 64 * h);
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 128 + 32 * h)));
        const __m512i va = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, shl), m30));
        const __m512i vb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                           _mm512_and_si512(_mm512_srlv_epi16(qh, shr), m30));
        // Σ (q − 32)·q̂ = Σ q·q̂ − 32·Σ q̂
        const int v = 2 * h;
        const __m512i da = _mm512_dpbusd_epi32(_mm512_loadu_si512(off + 16 * v), va, _mm512_loadu_si512(xq + 64 * v));
        const __m512i db =
            _mm512_dpbusd_epi32(_mm512_loadu_si512(off + 16 * v + 16), vb, _mm512_loadu_si512(xq + 64 * v + 64));
        acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(da),
                                 _mm512_mul_ps(_mm512_permutexvar_ps(sel[v], sc), _mm512_loadu_ps(dl + 16 * v)), acc[0]);
        acc[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(db),
                                 _mm512_mul_ps(_mm512_permutexvar_ps(sel[v + 1], sc), _mm512_loadu_ps(dl + 16 * v + 16)),
                                 acc[1]);
      }
    }
    return _mm512_add_ps(acc[0], acc[1]);
  }
};

// Q2_K and Q3_K, one super-block (84 / 110 bytes) per step: one 64-byte load of the 2-bit fields
// (qs), and vector k = 0..3 takes bits 2k of every byte (a 16-bit shift; what it carries across
// bytes is masked off), with x̂ in the matching order (Q23_KSuper). Q3_K's third bit of value v is bit
// v / 32 of hmask[v % 32]: for vector k, bit k (bytes 0-31) or 4 + k (bytes 32-63) of the 32 hmask
// bytes in both halves, tested into a mask that adds 4. Sub-block j (16 values, four lanes) has
// scale d·(sc_j − 32) (Q3_K) or d·(sc_j & 15) and min dmin·(sc_j >> 4) (Q2_K); vector k's lanes hold
// sub-blocks 2k, 2k + 1, 8 + 2k, 9 + 2k, four lanes each.
template <bool kThreeBits>
struct Q23_KKernel {
  using Block = std::conditional_t<kThreeBits, BlockQ3_K, BlockQ2_K>;
  static constexpr int kQs = kThreeBits ? 32 : 16;  // byte offset of qs
  const __m512i m3 = _mm512_set1_epi8(0x03), four = _mm512_set1_epi8(0x04);
  static __m512i bit_per_half(int k) {
    return _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << k)), _mm256_set1_epi8(static_cast<char>(1 << (4 + k))), 1);
  }
  const __m512i hm_bit[4] = {bit_per_half(0), bit_per_half(1), bit_per_half(2), bit_per_half(3)};
  const __m512i sel[4] = {_mm512_set_epi32(9, 9, 9, 9, 8, 8, 8, 8, 1, 1, 1, 1, 0, 0, 0, 0),
                          _mm512_set_epi32(11, 11, 11, 11, 10, 10, 10, 10, 3, 3, 3, 3, 2, 2, 2, 2),
                          _mm512_set_epi32(13, 13, 13, 13, 12, 12, 12, 12, 5, 5, 5, 5, 4, 4, 4, 4),
                          _mm512_set_epi32(15, 15, 15, 15, 14, 14, 14, 14, 7, 7, 7, 7, 6, 6, 6, 6)};

  // The sixteen sub-block scales as int8 (Q3_K: the six-bit codes − 32, as dequantize_row_q3_K
  // unpacks them).
  static __m128i scales_of(const uint8_t* p) {
    if constexpr (kThreeBits) {
      uint32_t a[3];
      std::memcpy(a, p + 96, 12);
      constexpr uint32_t k1 = 0x03030303, k2 = 0x0f0f0f0f;
      const uint32_t u[4] = {(a[0] & k2) | (((a[2] >> 0) & k1) << 4), (a[1] & k2) | (((a[2] >> 2) & k1) << 4),
                             ((a[0] >> 4) & k2) | (((a[2] >> 4) & k1) << 4), ((a[1] >> 4) & k2) | (((a[2] >> 6) & k1) << 4)};
      return _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u)), _mm_set1_epi8(32));
    } else {
      return _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), _mm_set1_epi8(0x0F));
    }
  }

  template <int k>
  __m512 step(__m512i qs, __m512i hm, const Q23_KSuper& x, __m512 sc, __m512 acc) const {
    __m512i v = _mm512_and_si512(_mm512_srli_epi16(qs, 2 * k), m3);
    __m512i start = _mm512_setzero_si512();
    if constexpr (kThreeBits) {
      v = _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(hm, hm_bit[k]), v, four);
      start = _mm512_load_si512(x.offset + 16 * k);  // Σ (q − 4)·q̂ = Σ q·q̂ − 4·Σ q̂
    }
    const __m512i dot = _mm512_dpbusd_epi32(start, v, _mm512_load_si512(x.q + 64 * k));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(_mm512_permutexvar_ps(sel[k], sc), _mm512_load_ps(x.d + 16 * k)),
                           acc);
  }

  __m512 row(const uint8_t* p, int64_t blocks, const XInt8& qx) const {
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t i = 0; i < blocks; ++i, p += sizeof(Block)) {
      const Q23_KSuper& x = qx.q23_k[static_cast<size_t>(i)];
      uint16_t d16;
      std::memcpy(&d16, p + (kThreeBits ? 108 : 80), 2);
      const __m512 sc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(scales_of(p))),
                                      _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<short>(d16))));
      if constexpr (!kThreeBits) {  // the mins: dmin·(sc >> 4) · (−d·Σq̂) per sub-block
        uint16_t dmin16;
        std::memcpy(&dmin16, p + 82, 2);
        const __m128i mins = _mm_and_si128(_mm_srli_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), 4),
                                           _mm_set1_epi8(0x0F));
        const __m512 m = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(mins)),
                                       _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<short>(dmin16))));
        acc[1] = _mm512_fmadd_ps(m, _mm512_loadu_ps(qx.sum16.data() + 16 * i), acc[1]);
      }
      const __m512i qs = _mm512_loadu_si512(p + kQs);
      const __m512i hm =
          kThreeBits ? _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))) : _mm512_setzero_si512();
      acc[0] = step<0>(qs, hm, x, sc, acc[0]);
      acc[1] = step<1>(qs, hm, x, sc, acc[1]);
      acc[0] = step<2>(qs, hm, x, sc, acc[0]);
      acc[1] = step<3>(qs, hm, x, sc, acc[1]);
    }
    return _mm512_add_ps(acc[0], acc[1]);
  }
};

// IQ4_XS, one super-block (136 bytes) per step: its 128 nibble bytes are eight IQ4_NL sub-blocks, two
// 64-byte loads of four each, with x̂ as two Q4_0Groups; vpshufb maps the nibbles to levels + 128. The
// eight six-bit scales are unpacked on eight 32-bit lanes at once: code ib = bits 4ib..4ib + 3 of
// scales_l (as a u32) | bits 2ib, 2ib + 1 of scales_h << 4; lane l of half h takes sub-block 4h + l / 4.
struct IQ4_XSKernel {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i levels = iq4_unsigned_levels();
  const __m256i low_shift = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i high_shift = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m512i sel[2] = {_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
                          _mm512_set_epi32(7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4)};

  __m512 row(const uint8_t* p, int64_t blocks, const XInt8& qx) const {
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t i = 0; i < blocks; ++i, p += sizeof(BlockIQ4_XS)) {
      uint16_t d16, scales_h;
      uint32_t scales_l;
      std::memcpy(&d16, p, 2);
      std::memcpy(&scales_h, p + 2, 2);
      std::memcpy(&scales_l, p + 4, 4);
      const __m256i low = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(scales_l)), low_shift),
                                           _mm256_set1_epi32(0xF));
      const __m256i high = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(scales_h), high_shift), _mm256_set1_epi32(3));
      const __m256i code = _mm256_or_si256(low, _mm256_slli_epi32(high, 4));
      // sub-block ib's step d·(code − 32) at lane ib
      const __m512 step = _mm512_zextps256_ps512(
          _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(code, _mm256_set1_epi32(32))), _mm256_set1_ps(_cvtsh_ss(d16))));
      for (int h = 0; h < 2; ++h) {
        const Q4_0Group& x = qx.q4_0[static_cast<size_t>(2 * i + h)];
        const __m512i q = _mm512_loadu_si512(p + 8 + 64 * h);
        const __m512i lo = _mm512_shuffle_epi8(levels, _mm512_and_si512(q, m4));
        const __m512i hi = _mm512_shuffle_epi8(levels, _mm512_and_si512(_mm512_srli_epi16(q, 4), m4));
        // Σ (level + 128 − 128)·q̂: the offset lanes (−128·Σ q̂ per sub-block) start the sum
        __m512i dot = _mm512_dpbusd_epi32(_mm512_load_si512(x.offset), lo, _mm512_load_si512(x.lo));
        dot = _mm512_dpbusd_epi32(dot, hi, _mm512_load_si512(x.hi));
        acc[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(_mm512_permutexvar_ps(sel[h], step), _mm512_load_ps(x.d)),
                                 acc[h]);
      }
    }
    return _mm512_add_ps(acc[0], acc[1]);
  }
};

// y = W · x̂ (+ bias). Each thread takes a contiguous range of rows and reads
// them one after another, so its part of W is one sequential stream (taking
// four rows side by side, to share x's loads, ran at half the speed from
// memory: the prefetchers follow one stream, not four interleaved ones); the
// sums of four consecutive rows are reduced together.
template <typename Kernel>
void run_rows(const WeightMatrix& w, float* y, const float* bias, const XInt8& qx) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  const size_t row_bytes = w.row_bytes();
  const int64_t blocks = w.cols / dtype_block_size(w.dtype);
  const int threads = w.bytes() >= kParallelMinBytes ? static_cast<int>(std::min<int64_t>(num_threads(), w.rows)) : 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const Kernel k;
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t r0 = w.rows * t / nt, r1 = w.rows * (t + 1) / nt;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
      const uint8_t* p = base + static_cast<size_t>(r) * row_bytes;
      const __m512 a0 = k.row(p, blocks, qx), a1 = k.row(p + row_bytes, blocks, qx);
      const __m512 a2 = k.row(p + 2 * row_bytes, blocks, qx), a3 = k.row(p + 3 * row_bytes, blocks, qx);
      __m128 v = reduce4(a0, a1, a2, a3);  // util/simd.h
      if (bias) v = _mm_add_ps(v, _mm_loadu_ps(bias + r));
      _mm_storeu_ps(y + r, v);
    }
    for (; r < r1; ++r) {
      const float v = _mm512_reduce_add_ps(k.row(base + static_cast<size_t>(r) * row_bytes, blocks, qx));
      y[r] = bias ? v + bias[r] : v;
    }
  }
}

}  // namespace
#endif  // PODKV_QUANT_INT8

bool gemv_quant_int8(const WeightMatrix& w, const float* x, float* y, const float* bias) {
#if defined(PODKV_QUANT_INT8)
  if (quant_dot() != QuantDot::Int8) return false;
  switch (w.dtype) {
    case DType::Q4_0: case DType::Q8_0: case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K:
    case DType::Q6_K: case DType::IQ4_NL: case DType::IQ4_XS:
      break;
    default:
      return false;
  }
  check_weight(w, "gemv");
  thread_local XInt8 qx;
  quantize_x(x, w.cols, qx);
  switch (w.dtype) {
    case DType::Q4_0: prepare_q4_0(qx, 8), run_rows<Q4_0Kernel<false>>(w, y, bias, qx); break;
    case DType::IQ4_NL: prepare_q4_0(qx, 128), run_rows<Q4_0Kernel<true>>(w, y, bias, qx); break;
    case DType::IQ4_XS: prepare_q4_0(qx, 128), run_rows<IQ4_XSKernel>(w, y, bias, qx); break;
    case DType::Q8_0: prepare_natural(qx, 128), run_rows<Q8_0Kernel>(w, y, bias, qx); break;
    case DType::Q2_K: prepare_q23_k(qx, false), run_rows<Q23_KKernel<false>>(w, y, bias, qx); break;
    case DType::Q3_K: prepare_q23_k(qx, true), run_rows<Q23_KKernel<true>>(w, y, bias, qx); break;
    case DType::Q4_K: prepare_q4_k(qx), run_rows<Q45_KKernel<false>>(w, y, bias, qx); break;
    case DType::Q5_K: prepare_q4_k(qx), run_rows<Q45_KKernel<true>>(w, y, bias, qx); break;
    default: prepare_natural(qx, 32), run_rows<Q6_KKernel>(w, y, bias, qx); break;  // Q6_K
  }
  return true;
#else
  (void)w, (void)x, (void)y, (void)bias;
  return false;
#endif
}

}  // namespace podkv::detail
