// IQ4_NL and IQ4_XS (llama.cpp's 4-bit non-linear types): dequantization of hand-made blocks against
// the layout written out value by value (independently of util/quant.cpp's loops). (The GEMV kernels
// are checked with the other types in test_quant.cpp.)
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "util/dtype.h"
#include "util/error.h"
#include "util/quant.h"

namespace podkv {
namespace {

// ggml-common.h's kvalues_iq4nl, written out here rather than taken from quant.h.
constexpr int kLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

void put_half(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

std::vector<float> decode(DType t, const std::vector<uint8_t>& bytes, size_t count) {
  std::vector<float> out(count);
  to_f32(t, bytes.data(), out.data(), count);
  return out;
}

TEST(QuantBlocks, Iq4LayoutSizes) {
  EXPECT_EQ(dtype_block_size(DType::IQ4_NL), 32);
  EXPECT_EQ(dtype_block_bytes(DType::IQ4_NL), 18u);
  EXPECT_EQ(dtype_block_size(DType::IQ4_XS), 256);
  EXPECT_EQ(dtype_block_bytes(DType::IQ4_XS), 136u);
  EXPECT_EQ(dtype_bytes(DType::IQ4_NL, 4096), 4096u / 32 * 18);
  EXPECT_EQ(dtype_bytes(DType::IQ4_XS, 4096), 4096u / 256 * 136);
  EXPECT_STREQ(dtype_name(DType::IQ4_NL), "IQ4_NL");
  EXPECT_STREQ(dtype_name(DType::IQ4_XS), "IQ4_XS");
  EXPECT_TRUE(dtype_is_quantized(DType::IQ4_XS));
}

// IQ4_NL {d; qs[16]}: value j < 16 is level[low nibble of qs[j]], value 16 + j level[high nibble]; times d.
TEST(QuantBlocks, IQ4_NL) {
  std::vector<uint8_t> b(18);
  put_half(b.data(), -0.5f);
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto out = decode(DType::IQ4_NL, b, 32);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(out[e], -0.5f * kLevels[e < 16 ? e : 31 - e]) << "value " << e;
}

// IQ4_XS {d; scales_h; scales_l[4]; qs[128]} at bytes 0, 2, 4, 8: sub-block ib's 6-bit scale code
// has its low four bits in scales_l[ib / 2] (low nibble for even ib) and its top two at bits 2ib of
// the little-endian u16 scales_h; step d·(code − 32). Its 32 values are nibbles of qs[16ib .. 16ib + 15]
// as in IQ4_NL.
TEST(QuantBlocks, IQ4_XS) {
  const int codes[8] = {0, 63, 32, 1, 17, 45, 31, 50};
  std::vector<uint8_t> b(136, 0);
  put_half(b.data(), 0.0625f);
  uint16_t scales_h = 0;
  for (int ib = 0; ib < 8; ++ib) {
    b[4 + ib / 2] = static_cast<uint8_t>(b[4 + ib / 2] | ((codes[ib] & 15) << (ib % 2 ? 4 : 0)));
    scales_h = static_cast<uint16_t>(scales_h | ((codes[ib] >> 4) << (2 * ib)));
  }
  std::memcpy(b.data() + 2, &scales_h, 2);
  std::mt19937 rng(11);
  for (int i = 8; i < 136; ++i) b[i] = static_cast<uint8_t>(rng());
  const auto out = decode(DType::IQ4_XS, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int ib = e / 32, j = e % 32;
    const uint8_t byte = b[8 + 16 * ib + j % 16];
    const int level = kLevels[j < 16 ? byte & 15 : byte >> 4];
    EXPECT_EQ(out[e], 0.0625f * static_cast<float>(codes[ib] - 32) * static_cast<float>(level)) << "value " << e;
  }
}

TEST(QuantBlocks, Iq4RejectsPartialBlocks) {
  std::vector<uint8_t> b(136);
  std::vector<float> out(256);
  EXPECT_THROW(to_f32(DType::IQ4_XS, b.data(), out.data(), 128), Error);
  EXPECT_THROW(to_f32(DType::IQ4_NL, b.data(), out.data(), 48), Error);
}

}  // namespace
}  // namespace podkv
