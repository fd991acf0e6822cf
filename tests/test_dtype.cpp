// Scalar conversions of util/dtype: f16 both ways (exhaustively over the 65536
// halves, and against the compiler's _Float16 where it has one), and Q8_0
// dequantisation against hand-computed blocks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "util/dtype.h"

using podkv::f16_to_f32;
using podkv::f32_to_f16;

namespace {

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

}  // namespace

TEST(F16, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    const bool nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
    if (nan) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
      const uint16_t back = f32_to_f16(f);
      ASSERT_EQ(back & 0x7c00u, 0x7c00u) << std::hex << h;
      ASSERT_NE(back & 0x3ffu, 0u) << std::hex << h;
      ASSERT_EQ(back & 0x8000u, h & 0x8000u) << std::hex << h;
    } else {
      ASSERT_EQ(f32_to_f16(f), h) << std::hex << h << " -> " << f;
    }
  }
}

TEST(F16, DecodesKnownValues) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(f16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(to_bits(f16_to_f32(0x8000)), 0x80000000u);
}

TEST(F16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(0.1f), 0x2e66);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie, even below
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie, even above
  EXPECT_EQ(f32_to_f16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3c01);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.99f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // tie between 65504 and 65536: overflows
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie, rounds to zero
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(f32_to_f16(3 * std::ldexp(1.0f, -25)), 0x0002);  // 1.5 ulp: tie to even
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)), 0x0400);  // up into normals
  EXPECT_EQ(f32_to_f16(1e-10f), 0x0000);
  EXPECT_EQ(f32_to_f16(-1e-10f), 0x8000);
}

#ifdef __FLT16_MAX__
// The compiler's float -> _Float16 conversion is IEEE round-to-nearest-even:
// compare on a spread of float bit patterns and on both sides of every
// rounding boundary (the midpoints between consecutive halves).
TEST(F16, MatchesCompilerConversion) {
  auto expect_same = [](uint32_t bits) {
    const float f = from_bits(bits);
    if (std::isnan(f)) return;
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    ASSERT_EQ(f32_to_f16(f), want) << std::hex << "f32 bits " << bits;
  };
  for (uint64_t bits = 0; bits <= 0xffffffffu; bits += 4093) expect_same(static_cast<uint32_t>(bits));
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const double mid = (static_cast<double>(f16_to_f32(h)) + f16_to_f32(h + 1)) / 2;
    const uint32_t mid_bits = to_bits(static_cast<float>(mid));
    for (uint32_t d = 0; d < 3; ++d) {
      expect_same(mid_bits + d);
      expect_same(mid_bits - d);
      expect_same((mid_bits + d) | 0x80000000u);
    }
  }
}
#endif

TEST(Q8_0, DequantisesHandBuiltBlocks) {
  // Two blocks: d = 0.5 (0x3800) with q = i - 16, and d = -0.25 (0xb400) with q = 127 - 8i.
  uint8_t blocks[2 * podkv::kQ8BlockBytes];
  const uint16_t d0 = 0x3800, d1 = 0xb400;
  std::memcpy(blocks, &d0, 2);
  std::memcpy(blocks + podkv::kQ8BlockBytes, &d1, 2);
  for (int i = 0; i < 32; ++i) {
    blocks[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
    blocks[podkv::kQ8BlockBytes + 2 + i] = static_cast<uint8_t>(static_cast<int8_t>(127 - 8 * i));
  }
  float out[64];
  podkv::to_f32(podkv::DType::Q8_0, blocks, out, 64);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(out[i], 0.5f * (i - 16)) << i;
    EXPECT_EQ(out[32 + i], -0.25f * (127 - 8 * i)) << i;
  }
  EXPECT_EQ(podkv::dtype_bytes(podkv::DType::Q8_0, 64), 68u);
}

TEST(Dtype, ConvertsF16AndBf16Arrays) {
  const uint16_t f16[3] = {0x3c00, 0xc200, 0x0000};
  const uint16_t bf16[3] = {0x3f80, 0xc040, 0x8000};
  float out[3];
  podkv::to_f32(podkv::DType::F16, f16, out, 3);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  EXPECT_EQ(out[2], 0.0f);
  podkv::to_f32(podkv::DType::BF16, bf16, out, 3);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  EXPECT_EQ(podkv::f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie to even
}
