// llama.cpp's quantized block types: dequantization of hand-made blocks against
// the layout written out value by value (independently of util/quant.cpp's
// loops), the GEMV and GEMM kernels against the double-precision reference,
// and the reference quantizers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ops/matmul.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/quant.h"

namespace podkv {
namespace {

using quant::kSuperBlock;

void put_half(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// Deterministic filler bytes: every bit pattern shows up across a block.
void fill_pattern(uint8_t* p, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
}

// Decodes one block with to_f32 and checks every value against expected(e).
void expect_block(DType t, const std::vector<uint8_t>& block, const std::function<double(int)>& expected) {
  const int n = dtype_block_size(t);
  ASSERT_EQ(block.size(), dtype_block_bytes(t)) << dtype_name(t);
  std::vector<float> out(static_cast<size_t>(n));
  to_f32(t, block.data(), out.data(), out.size());
  for (int e = 0; e < n; ++e) {
    const double want = expected(e);
    ASSERT_NEAR(out[e], want, 1e-6 * std::max(1.0, std::fabs(want))) << dtype_name(t) << " value " << e;
  }
}

TEST(QuantBlocks, LayoutSizes) {
  const std::pair<DType, size_t> sizes[] = {{DType::Q4_0, 18}, {DType::Q4_1, 20}, {DType::Q5_0, 22},
                                            {DType::Q5_1, 24}, {DType::Q8_0, 34}, {DType::Q2_K, 84},
                                            {DType::Q3_K, 110}, {DType::Q4_K, 144}, {DType::Q5_K, 176},
                                            {DType::Q6_K, 210}};
  for (const auto& [t, bytes] : sizes) {
    EXPECT_EQ(dtype_block_bytes(t), bytes) << dtype_name(t);
    EXPECT_EQ(dtype_bytes(t, 4096), 4096 / dtype_block_size(t) * bytes) << dtype_name(t);
  }
  EXPECT_EQ(dtype_block_size(DType::Q4_K), 256);
  EXPECT_EQ(dtype_block_size(DType::Q5_0), 32);
}

// Q4_0 {d; qs[16]}: value j < 16 is the low nibble of qs[j], value 16 + j its high nibble; minus 8.
TEST(QuantBlocks, Q4_0) {
  std::vector<uint8_t> b(18);
  put_half(b.data(), 0.5f);
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  expect_block(DType::Q4_0, b, [](int e) { return 0.5 * ((e < 16 ? e : 31 - e) - 8); });
}

// Q4_1 {d; m; qs[16]}: d·q + m.
TEST(QuantBlocks, Q4_1) {
  std::vector<uint8_t> b(20);
  put_half(b.data(), 0.25f);
  put_half(b.data() + 2, -1.5f);
  for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<uint8_t>(((j * 7) & 15) | (j << 4));
  expect_block(DType::Q4_1, b, [](int e) { return 0.25 * (e < 16 ? (e * 7) & 15 : e - 16) - 1.5; });
}

// Q5_0 {d; qh[4]; qs[16]}: bit e of the little-endian u32 qh is value e's fifth bit; minus 16.
TEST(QuantBlocks, Q5_0) {
  std::vector<uint8_t> b(22);
  put_half(b.data(), 2.0f);
  const uint32_t qh = 0xA5C3F00Fu;
  std::memcpy(b.data() + 2, &qh, 4);
  fill_pattern(b.data() + 6, 16, 1);
  const std::vector<uint8_t> c = b;
  expect_block(DType::Q5_0, b, [&](int e) {
    const int nib = e < 16 ? c[6 + e] & 15 : c[6 + e - 16] >> 4;
    return 2.0 * ((nib | static_cast<int>((qh >> e) & 1) << 4) - 16);
  });
}

// Q5_1 {d; m; qh[4]; qs[16]}.
TEST(QuantBlocks, Q5_1) {
  std::vector<uint8_t> b(24);
  put_half(b.data(), 0.125f);
  put_half(b.data() + 2, 3.0f);
  const uint32_t qh = 0x0F0F3C3Cu;
  std::memcpy(b.data() + 4, &qh, 4);
  fill_pattern(b.data() + 8, 16, 2);
  const std::vector<uint8_t> c = b;
  expect_block(DType::Q5_1, b, [&](int e) {
    const int nib = e < 16 ? c[8 + e] & 15 : c[8 + e - 16] >> 4;
    return 0.125 * (nib | static_cast<int>((qh >> e) & 1) << 4) + 3.0;
  });
}

// Value e of a Q2_K / Q3_K super-block: half h = e / 128, plane j = e % 128 / 32
// (bits 2j..2j+1), part p = e % 32 / 16, l = e % 16; byte qs[32h + 16p + l];
// sub-block (scale) 8h + 2j + p.
struct Q23Index {
  int half, plane, part, l;
  explicit Q23Index(int e) : half(e / 128), plane(e % 128 / 32), part(e % 32 / 16), l(e % 16) {}
  int byte() const { return 32 * half + 16 * part + l; }
  int sub() const { return 8 * half + 2 * plane + part; }
};

// Q2_K {scales[16]; qs[64]; d; dmin}: d·(scale & 15)·q − dmin·(scale >> 4).
TEST(QuantBlocks, Q2_K) {
  std::vector<uint8_t> b(84);
  fill_pattern(b.data(), 80, 3);
  put_half(b.data() + 80, 0.5f);
  put_half(b.data() + 82, 0.25f);
  const std::vector<uint8_t> c = b;
  expect_block(DType::Q2_K, b, [&](int e) {
    const Q23Index i(e);
    const int q = (c[16 + i.byte()] >> (2 * i.plane)) & 3;
    const int sc = c[i.sub()];
    return 0.5 * (sc & 15) * q - 0.25 * (sc >> 4);
  });
}

// Q3_K {hmask[32]; qs[64]; scales[12]; d}: 6-bit scales s (packed below),
// d·(s − 32)·(q − 4·(hmask bit clear)); the hmask byte is 16p + l, bit 4h + j.
TEST(QuantBlocks, Q3_K) {
  std::vector<uint8_t> b(110);
  fill_pattern(b.data(), 96, 4);
  int scale6[16];
  for (int s = 0; s < 16; ++s) scale6[s] = (s * 13 + 5) & 63;
  uint8_t* packed = b.data() + 96;
  std::memset(packed, 0, 12);
  for (int s = 0; s < 16; ++s) {
    packed[s % 8] |= static_cast<uint8_t>((scale6[s] & 15) << (s < 8 ? 0 : 4));
    packed[8 + s % 4] |= static_cast<uint8_t>((scale6[s] >> 4) << (2 * (s / 4)));
  }
  put_half(b.data() + 108, 0.0625f);
  const std::vector<uint8_t> c = b;
  expect_block(DType::Q3_K, b, [&](int e) {
    const Q23Index i(e);
    const int q = (c[32 + i.byte()] >> (2 * i.plane)) & 3;
    const bool high = (c[16 * i.part + i.l] >> (4 * i.half + i.plane)) & 1;
    return 0.0625 * (scale6[i.sub()] - 32) * (q - (high ? 0 : 4));
  });
}

// The 12 bytes of Q4_K / Q5_K scales: eight 6-bit (scale, min) pairs.
void pack_k4_scales(const int* sc, const int* mn, uint8_t* q) {
  for (int k = 0; k < 4; ++k) {
    q[k] = static_cast<uint8_t>(sc[k] | ((sc[k + 4] >> 4) << 6));
    q[k + 4] = static_cast<uint8_t>(mn[k] | ((mn[k + 4] >> 4) << 6));
    q[k + 8] = static_cast<uint8_t>((sc[k + 4] & 15) | ((mn[k + 4] & 15) << 4));
  }
}

// Q4_K {d; dmin; scales[12]; qs[128]}: chunk c = e / 64 of 32 bytes; the first
// 32 values are the low nibbles (sub-block 2c), the next 32 the high (2c + 1).
// Q5_K adds qh[32]: bit 2c (low) / 2c + 1 (high) of qh[l] adds 16.
void check_q45_k(bool five) {
  const DType t = five ? DType::Q5_K : DType::Q4_K;
  std::vector<uint8_t> b(five ? 176 : 144);
  put_half(b.data(), 0.25f);
  put_half(b.data() + 2, 0.5f);
  int sc[8], mn[8];
  for (int s = 0; s < 8; ++s) {
    sc[s] = (s * 23 + 7) & 63;
    mn[s] = (s * 41 + 60) & 63;
  }
  pack_k4_scales(sc, mn, b.data() + 4);
  fill_pattern(b.data() + 16, b.size() - 16, five ? 6 : 5);
  const std::vector<uint8_t> c = b;
  const size_t qs = five ? 48 : 16;
  expect_block(t, b, [&](int e) {
    const int chunk = e / 64, upper = e % 64 / 32, l = e % 32;
    const uint8_t byte = c[qs + 32 * chunk + l];
    int q = upper ? byte >> 4 : byte & 15;
    if (five && ((c[16 + l] >> (2 * chunk + upper)) & 1)) q += 16;
    const int sub = 2 * chunk + upper;
    return 0.25 * sc[sub] * q - 0.5 * mn[sub];
  });
}

TEST(QuantBlocks, Q4_K) { check_q45_k(false); }
TEST(QuantBlocks, Q5_K) { check_q45_k(true); }

// Q6_K {ql[128]; qh[64]; scales[16] int8; d}: half h = e / 128, quarter k =
// e % 128 / 32, l = e % 32; low 4 bits from ql[64h + l (+32 for odd k)] (low
// nibble for k < 2, high for k ≥ 2), high 2 bits (2k) of qh[32h + l]; minus 32;
// scale scales[8h + l / 16 + 2k].
TEST(QuantBlocks, Q6_K) {
  std::vector<uint8_t> b(210);
  fill_pattern(b.data(), 192, 7);
  for (int s = 0; s < 16; ++s) b[192 + s] = static_cast<uint8_t>(static_cast<int8_t>(s * 17 - 128));
  put_half(b.data() + 208, 0.03125f);
  const std::vector<uint8_t> c = b;
  expect_block(DType::Q6_K, b, [&](int e) {
    const int h = e / 128, k = e % 128 / 32, l = e % 32;
    const uint8_t low = c[64 * h + l + (k & 1 ? 32 : 0)];
    const int q = ((k < 2 ? low & 15 : low >> 4) | (((c[128 + 32 * h + l] >> (2 * k)) & 3) << 4)) - 32;
    const int sc = static_cast<int8_t>(c[192 + 8 * h + l / 16 + 2 * k]);
    return 0.03125 * sc * q;
  });
}

TEST(QuantBlocks, RejectsPartialBlocks) {
  std::vector<uint8_t> b(210);
  std::vector<float> out(256);
  EXPECT_THROW(to_f32(DType::Q6_K, b.data(), out.data(), 128), Error);
  EXPECT_THROW(to_f32(DType::Q4_0, b.data(), out.data(), 31), Error);
}

// ---- kernels against the reference ----

const DType kQuantTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K,
                             DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS,
                             DType::IQ2_XXS, DType::IQ2_XS, DType::IQ2_S, DType::IQ3_XXS, DType::IQ3_S,
                             DType::IQ1_S, DType::IQ1_M};

// Random blocks: random quant bytes, and scales of sane size in every f16 field.
std::vector<uint8_t> random_weights(DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::vector<uint8_t> w(dtype_bytes(t, static_cast<size_t>(rows * cols)));
  for (auto& byte : w) byte = static_cast<uint8_t>(rng());
  const size_t bb = dtype_block_bytes(t);
  std::uniform_real_distribution<float> scale(0.001f, 0.02f);
  for (size_t off = 0; off < w.size(); off += bb) {
    uint8_t* p = w.data() + off;
    switch (t) {
      case DType::Q4_0: case DType::Q5_0: case DType::Q8_0: case DType::IQ4_NL: case DType::IQ4_XS:
      case DType::IQ2_XXS: case DType::IQ2_XS: case DType::IQ2_S: case DType::IQ3_XXS: case DType::IQ3_S:
      case DType::IQ1_S:
        put_half(p, scale(rng));
        break;
      case DType::IQ1_M: {  // the fp16 scale is the top nibbles of the four u16 words at byte 48
        uint8_t h[2];
        put_half(h, scale(rng));
        const uint16_t d = static_cast<uint16_t>(h[0] | (h[1] << 8));
        for (int word = 0; word < 4; ++word) {
          p[48 + 2 * word + 1] = static_cast<uint8_t>((p[48 + 2 * word + 1] & 0x0F) | (((d >> (4 * word)) & 0xF) << 4));
        }
        break;
      }
      case DType::Q4_1: case DType::Q5_1: put_half(p, scale(rng)); put_half(p + 2, -8 * scale(rng)); break;
      case DType::Q2_K: put_half(p + 80, scale(rng)); put_half(p + 82, scale(rng)); break;
      case DType::Q3_K: put_half(p + 108, scale(rng)); break;
      case DType::Q4_K: case DType::Q5_K: put_half(p, scale(rng)); put_half(p + 2, scale(rng)); break;
      case DType::Q6_K: put_half(p + 208, scale(rng)); break;
      default: break;
    }
  }
  return w;
}

double max_rel(const std::vector<float>& a, const std::vector<float>& ref) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - ref[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
  }
  return diff / scale;
}

// Sets the GEMV's QuantDot mode for one scope.
struct QuantDotScope {
  explicit QuantDotScope(QuantDot mode) : saved(quant_dot()) { set_quant_dot(mode); }
  ~QuantDotScope() { set_quant_dot(saved); }
  QuantDot saved;
};

TEST(QuantKernels, GemvAndGemmMatchReference) {
  const QuantDotScope exact(QuantDot::Exact);  // the float32-x GEMV
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (DType t : kQuantTypes) {
    const int block = dtype_block_size(t);
    for (int64_t rows : {1, 3, 17, 130}) {
      for (int64_t cols : {int64_t{block}, int64_t{3 * block}, int64_t{2048}}) {
        const auto w_bytes = random_weights(t, rows, cols, rng);
        const WeightMatrix w{t, rows, cols, w_bytes.data()};
        for (int64_t tokens : {1, 5}) {
          std::vector<float> x(static_cast<size_t>(tokens * cols)), bias(static_cast<size_t>(rows));
          for (auto& v : x) v = u(rng);
          for (auto& v : bias) v = u(rng);
          std::vector<float> want(static_cast<size_t>(tokens * rows)), got(want.size());
          matmul_reference(w, x.data(), tokens, want.data(), bias.data());
          for (int threads : {1, 2}) {
            set_num_threads(threads);
            matmul(w, x.data(), tokens, got.data(), bias.data());
            EXPECT_LT(max_rel(got, want), 2e-6)
                << dtype_name(t) << " rows " << rows << " cols " << cols << " tokens " << tokens << " threads " << threads;
          }
        }
      }
    }
  }
  set_num_threads(1);
}

// The Int8 GEMV (x quantized to int8 per block of 32, integer dot products)
// against the exact one on odd shapes (odd block counts, rows not a multiple of
// anything). x̂ = d·round(x / d) with d = max|x| / 127 over x's block, so
// |x̂_j − x_j| ≤ max|x|_block(j) / 254 and per row
//   |y_int8 − y_exact| ≤ Σ_j |w_j| · max|x|_block(j) / 254
// (w the dequantized weights), plus float rounding of the two sums, allowed
// for as 1e-5 · Σ|w_j·x_j|. x here has outliers (a fifth of the values ×10),
// which widen the blocks' rounding steps: max|Δy| / max|y| measured up to 1.6e-2
// on these shapes (printed; not a check, the per-row bound is).
TEST(QuantKernels, Int8GemvWithinXRoundingOfExact) {
  std::mt19937 rng(23);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  double worst_rel = 0;
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_NL,
                  DType::IQ4_XS}) {
    const int block = dtype_block_size(t);
    for (int64_t rows : {1, 3, 17, 130, 1031}) {
      for (int64_t cols : {int64_t{block}, int64_t{3 * block}, int64_t{5 * block}, int64_t{2048}}) {
        const auto w_bytes = random_weights(t, rows, cols, rng);
        const WeightMatrix w{t, rows, cols, w_bytes.data()};
        std::vector<float> wf(static_cast<size_t>(rows * cols));
        to_f32(t, w_bytes.data(), wf.data(), wf.size());
        std::vector<float> x(static_cast<size_t>(cols));
        for (auto& v : x) v = u(rng) * (u(rng) > 0.8f ? 10.0f : 1.0f);  // some outliers per block
        std::vector<double> block_max(static_cast<size_t>(cols / 32), 0.0);
        for (int64_t j = 0; j < cols; ++j)
          block_max[j / 32] = std::max(block_max[j / 32], std::fabs(static_cast<double>(x[j])));
        std::vector<float> exact(static_cast<size_t>(rows)), int8(exact.size());
        {
          const QuantDotScope mode(QuantDot::Exact);
          gemv(w, x.data(), exact.data());
        }
        for (int threads : {1, 2}) {
          set_num_threads(threads);
          const QuantDotScope mode(QuantDot::Int8);
          gemv(w, x.data(), int8.data());
          double max_diff = 0, max_y = 0;
          for (int64_t r = 0; r < rows; ++r) {
            double bound = 0, mag = 0;
            for (int64_t j = 0; j < cols; ++j) {
              const double wj = std::fabs(static_cast<double>(wf[static_cast<size_t>(r * cols + j)]));
              bound += wj * block_max[j / 32] / 254.0;
              mag += wj * std::fabs(static_cast<double>(x[j]));
            }
            const double diff = std::fabs(static_cast<double>(int8[r]) - exact[r]);
            EXPECT_LE(diff, bound + 1e-5 * mag)
                << dtype_name(t) << " rows " << rows << " cols " << cols << " row " << r << " threads " << threads;
            max_diff = std::max(max_diff, diff);
            max_y = std::max(max_y, std::fabs(static_cast<double>(exact[r])));
          }
          if (rows >= 17) {
            worst_rel = std::max(worst_rel, max_diff / max_y);
            // x's rounding shows: the int8 kernel ran (a type it declines would equal the exact path).
            EXPECT_GT(max_diff, 0.0) << dtype_name(t) << " rows " << rows << " cols " << cols;
          }
        }
      }
    }
  }
  set_num_threads(1);
  RecordProperty("int8_max_relative_error", std::to_string(worst_rel));
  std::printf("Int8 GEMV: worst max|Δy| / max|y| over the shapes with >= 17 rows: %.3g\n", worst_rel);
}

TEST(QuantKernels, RejectsColumnsOutsideBlocks) {
  std::vector<uint8_t> w(210 * 2);
  std::vector<float> x(384), y(2);
  EXPECT_THROW(gemv(WeightMatrix{DType::Q6_K, 2, 384, w.data()}, x.data(), y.data()), Error);
}

// ---- quantizers ----

TEST(Quantize, RoundTripWithinAStep) {
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(32 * 64);
  for (auto& v : x) v = g(rng);
  struct Case { DType t; void (*q)(const float*, uint8_t*, size_t); int levels; };
  for (const Case& c : {Case{DType::Q4_0, quant::quantize_q4_0, 16}, Case{DType::Q4_1, quant::quantize_q4_1, 16},
                        Case{DType::Q5_0, quant::quantize_q5_0, 32}, Case{DType::Q5_1, quant::quantize_q5_1, 32}}) {
    std::vector<uint8_t> bytes(dtype_bytes(c.t, x.size()));
    c.q(x.data(), bytes.data(), x.size());
    std::vector<float> back(x.size());
    to_f32(c.t, bytes.data(), back.data(), back.size());
    for (size_t b = 0; b < x.size() / 32; ++b) {
      float lo = x[32 * b], hi = lo;
      for (int j = 0; j < 32; ++j) lo = std::min(lo, x[32 * b + j]), hi = std::max(hi, x[32 * b + j]);
      // Symmetric types: step = 2·absmax / levels, and the levels run from
      // −levels/2 to levels/2 − 1 steps, so values at the short end may clamp
      // a whole step away. Affine types: step = (hi − lo) / (levels − 1), half a step.
      const float amax = std::max(std::fabs(lo), std::fabs(hi));
      const bool symmetric = c.t == DType::Q4_0 || c.t == DType::Q5_0;
      const float bound = symmetric ? 2 * amax / c.levels : 0.5f * (hi - lo) / (c.levels - 1);
      for (int j = 0; j < 32; ++j)
        ASSERT_LE(std::fabs(back[32 * b + j] - x[32 * b + j]), bound * 1.01f + 1e-3f * amax)
            << dtype_name(c.t) << " block " << b << " value " << j;
    }
  }
}

TEST(Quantize, Q4_KRoundTrip) {
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.3f, 1.0f);
  std::vector<float> x(256 * 8);
  for (auto& v : x) v = g(rng);
  std::vector<uint8_t> bytes(dtype_bytes(DType::Q4_K, x.size()));
  quant::quantize_q4_k(x.data(), bytes.data(), x.size());
  std::vector<float> back(x.size());
  to_f32(DType::Q4_K, bytes.data(), back.data(), back.size());
  for (size_t s = 0; s < x.size() / 32; ++s) {  // per 32-value sub-block: within ~a step of (max − min) / 15
    float lo = 0, hi = x[32 * s];
    for (int j = 0; j < 32; ++j) lo = std::min(lo, x[32 * s + j]), hi = std::max(hi, x[32 * s + j]);
    const float step = (hi - lo) / 15;
    for (int j = 0; j < 32; ++j)
      ASSERT_LE(std::fabs(back[32 * s + j] - x[32 * s + j]), step) << "sub-block " << s << " value " << j;
  }
}

TEST(Quantize, Q5_KRoundTrip) {
  std::mt19937 rng(6);
  std::normal_distribution<float> g(0.3f, 1.0f);
  std::vector<float> x(256 * 8);
  for (auto& v : x) v = g(rng);
  std::vector<uint8_t> bytes(dtype_bytes(DType::Q5_K, x.size()));
  quant::quantize_q5_k(x.data(), bytes.data(), x.size());
  std::vector<float> back(x.size());
  to_f32(DType::Q5_K, bytes.data(), back.data(), back.size());
  double q5_error = 0, q4_error = 0;
  for (size_t s = 0; s < x.size() / 32; ++s) {  // per 32-value sub-block: within ~a step of (max − min) / 31
    float lo = 0, hi = x[32 * s];
    for (int j = 0; j < 32; ++j) lo = std::min(lo, x[32 * s + j]), hi = std::max(hi, x[32 * s + j]);
    const float step = (hi - lo) / 31;
    for (int j = 0; j < 32; ++j) {
      ASSERT_LE(std::fabs(back[32 * s + j] - x[32 * s + j]), step) << "sub-block " << s << " value " << j;
      q5_error += std::pow(back[32 * s + j] - x[32 * s + j], 2);
    }
  }
  // The fifth bit halves the error against Q4_K's (its squared error about a quarter).
  std::vector<uint8_t> q4(dtype_bytes(DType::Q4_K, x.size()));
  quant::quantize_q4_k(x.data(), q4.data(), x.size());
  to_f32(DType::Q4_K, q4.data(), back.data(), back.size());
  for (size_t i = 0; i < x.size(); ++i) q4_error += std::pow(back[i] - x[i], 2);
  EXPECT_LT(q5_error, 0.35 * q4_error);
}

// Q2_K and Q3_K on Gaussian values: the rms error falls with each bit (Q2_K > Q3_K > Q4_K) and stays
// within a fraction of the values' spread (measured, session 44: 0.29, 0.15 and 0.071 of sigma).
TEST(Quantize, Q2_KAndQ3_KRoundTrip) {
  std::mt19937 rng(9);
  std::normal_distribution<float> g(0.3f, 1.0f);
  std::vector<float> x(256 * 16);
  for (auto& v : x) v = g(rng);
  auto rms_error = [&](DType t, void (*quantize)(const float*, uint8_t*, size_t)) {
    std::vector<uint8_t> bytes(dtype_bytes(t, x.size()));
    quantize(x.data(), bytes.data(), x.size());
    std::vector<float> back(x.size());
    to_f32(t, bytes.data(), back.data(), back.size());
    double e = 0;
    for (size_t i = 0; i < x.size(); ++i) e += std::pow(back[i] - x[i], 2);
    return std::sqrt(e / static_cast<double>(x.size()));
  };
  const double q2 = rms_error(DType::Q2_K, quant::quantize_q2_k), q3 = rms_error(DType::Q3_K, quant::quantize_q3_k),
               q4 = rms_error(DType::Q4_K, quant::quantize_q4_k);
  std::printf("rms error of N(0.3, 1): Q2_K %.3f, Q3_K %.3f, Q4_K %.3f\n", q2, q3, q4);
  EXPECT_LT(q2, 0.35);
  EXPECT_LT(q3, 0.2);
  EXPECT_LT(q3, 0.75 * q2);
  EXPECT_LT(q4, 0.75 * q3);
  // All zeros stay zeros (the searches' degenerate branches).
  std::vector<float> zeros(256, 0.0f), back(256, 1.0f);
  using Quantizer = void (*)(const float*, uint8_t*, size_t);
  for (auto [t, quantize] : {std::pair<DType, Quantizer>{DType::Q2_K, quant::quantize_q2_k},
                             std::pair<DType, Quantizer>{DType::Q3_K, quant::quantize_q3_k}}) {
    std::vector<uint8_t> bytes(dtype_bytes(t, 256));
    quantize(zeros.data(), bytes.data(), 256);
    to_f32(t, bytes.data(), back.data(), 256);
    for (float v : back) ASSERT_EQ(v, 0.0f) << dtype_name(t);
  }
}

// Q6_K: each 16-value sub-block's nominal step is s = max|x| / 32 (its value of
// largest magnitude maps to −32). The step stored is d·sc with sc an int8 and d
// the super-block's largest s / 128, so it is off from s by up to d / 2; a value
// rounds to within half a stored step, or, where it clamps at 31 or −32, within
// s + 16·d. The rms error, about s / √12 for a Gaussian, is checked too.
TEST(Quantize, Q6_KRoundTrip) {
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.1f, 1.0f);
  std::vector<float> x(256 * 8);
  for (auto& v : x) v = g(rng);
  for (int j = 0; j < 16; ++j) x[256 * 3 + 16 * 5 + j] *= 1e-3f;  // a tiny sub-block beside ordinary ones
  std::vector<uint8_t> bytes(dtype_bytes(DType::Q6_K, x.size()));
  quant::quantize_q6_k(x.data(), bytes.data(), x.size());
  std::vector<float> back(x.size());
  to_f32(DType::Q6_K, bytes.data(), back.data(), back.size());
  double err2 = 0, x2 = 0;
  for (size_t sb = 0; sb < x.size() / 256; ++sb) {
    float super_max = 0;
    for (int j = 0; j < 256; ++j) super_max = std::max(super_max, std::fabs(x[256 * sb + j]));
    const float d = super_max / 32 / 128;
    for (size_t s = 16 * sb; s < 16 * sb + 16; ++s) {
      float amax = 0;
      for (int j = 0; j < 16; ++j) amax = std::max(amax, std::fabs(x[16 * s + j]));
      const float step = amax / 32;
      for (int j = 0; j < 16; ++j) {
        const float e = std::fabs(back[16 * s + j] - x[16 * s + j]);
        ASSERT_LE(e, (step + 16 * d) * 1.01f) << "sub-block " << s << " value " << j;
        err2 += static_cast<double>(e) * e;
        x2 += static_cast<double>(x[16 * s + j]) * x[16 * s + j];
      }
    }
  }
  // Gaussian sub-blocks of 16: max|x| ≈ 1.8σ, s / √12 ≈ 0.016σ
  EXPECT_LT(std::sqrt(err2 / x2), 0.025);
  std::vector<float> zeros(256, 0.0f), zeros_back(256, 1.0f);
  quant::quantize_q6_k(zeros.data(), bytes.data(), 256);
  to_f32(DType::Q6_K, bytes.data(), zeros_back.data(), 256);
  for (float v : zeros_back) EXPECT_EQ(v, 0.0f);
}

// A block whose values are exactly representable comes back exactly: d = −max / 8.
TEST(Quantize, Q4_0ExactBlock) {
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>((j % 16) - 8) * -0.25f;  // max magnitude 2 at q = 0
  uint8_t bytes[18];
  quant::quantize_q4_0(x, bytes, 32);
  float back[32];
  to_f32(DType::Q4_0, bytes, back, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(back[j], x[j]) << j;
}

}  // namespace
}  // namespace podkv
