// Reference dequantizers of llama.cpp's i-quants (layouts in quant.h, grids in iq_grids.h). Each
// computes exactly what ggml's dequantize_row_* computes, in the same float operations and order
// (tests/test_quant_iq_grids.cpp compares them bit for bit with ggml's compiled ones).
#include <cstring>
#include <string>

#include "util/error.h"
#include "util/iq_grids.h"
#include "util/quant.h"

namespace podkv::quant {
namespace {

// Value j of a grid row: its byte j (ggml reads the row through a byte pointer on a little-endian host).
inline int grid_byte(uint64_t row, int j) { return static_cast<int>((row >> (8 * j)) & 0xFF); }

// ±1 for value j by bit j of a sign byte (ggml's kmask_iq2xs[j] is 1 << j).
inline float sign_of(uint8_t signs, int j) { return (signs >> j) & 1 ? -1.0f : 1.0f; }

// 8 values of a magnitude grid row with their signs, times the step: ggml's db * grid[j] * ±1.
inline void signed_row(uint64_t row, uint8_t signs, float step, float* y) {
  for (int j = 0; j < 8; ++j) y[j] = step * static_cast<float>(grid_byte(row, j)) * sign_of(signs, j);
}

// Per 32 values 8 bytes: four grid indices, then a u32 with four 7-bit sign codes (bits 7l..7l+6)
// and the 4-bit scale s on top; step d·(0.5 + s)/4.
void dequant_iq2_xxs(const BlockIQ2_XXS& b, float* y) {
  const float d = h2f(b.d);
  const auto* bytes = reinterpret_cast<const uint8_t*>(b.qs);
  for (int ib = 0; ib < 8; ++ib) {
    const uint8_t* index = bytes + 8 * ib;
    const uint32_t signs_scale = load_u32(index + 4);
    const float step = d * (0.5f + static_cast<float>(signs_scale >> 28)) * 0.25f;
    for (int l = 0; l < 4; ++l, y += 8)
      signed_row(kIq2xxsGrid[index[l]], kIqSigns[(signs_scale >> (7 * l)) & 127], step, y);
  }
}

// As IQ2_XXS, but 64 one-byte indices into a grid of 4-value rows (two a group of 8 values), the
// u32s after them; step d·(0.5 + s)/2.
void dequant_iq3_xxs(const BlockIQ3_XXS& b, float* y) {
  const float d = h2f(b.d);
  const uint8_t* index = b.qs;
  for (int ib = 0; ib < 8; ++ib, index += 8) {
    const uint32_t signs_scale = load_u32(b.qs + 64 + 4 * ib);
    const float step = d * (0.5f + static_cast<float>(signs_scale >> 28)) * 0.5f;
    for (int l = 0; l < 4; ++l, y += 8) {
      const uint8_t signs = kIqSigns[(signs_scale >> (7 * l)) & 127];
      const uint32_t first = kIq3xxsGrid[index[2 * l]], second = kIq3xxsGrid[index[2 * l + 1]];
      for (int j = 0; j < 4; ++j) {
        y[j] = step * static_cast<float>(grid_byte(first, j)) * sign_of(signs, j);
        y[j + 4] = step * static_cast<float>(grid_byte(second, j)) * sign_of(signs, j + 4);
      }
    }
  }
}

// Per 8 values a u16: a 9-bit index and a 7-bit sign code; per 32 values a scale byte whose low
// nibble steps the first 16 values and high nibble the next 16, step d·(0.5 + s)/4.
void dequant_iq2_xs(const BlockIQ2_XS& b, float* y) {
  const float d = h2f(b.d);
  for (int ib = 0; ib < 8; ++ib) {
    const float steps[2] = {d * (0.5f + static_cast<float>(b.scales[ib] & 0xF)) * 0.25f,
                            d * (0.5f + static_cast<float>(b.scales[ib] >> 4)) * 0.25f};
    for (int l = 0; l < 4; ++l, y += 8) {
      const uint16_t q = b.qs[4 * ib + l];
      signed_row(kIq2xsGrid[q & 511], kIqSigns[q >> 9], steps[l / 2], y);
    }
  }
}

// 10-bit indices: qs[4·ib + l] low 8 bits, bits 2l..2l+1 of qh[ib] above them; plain sign bytes
// (all 8 bits, no parity) at qs[32 + 4·ib + l]; scales as IQ2_XS.
void dequant_iq2_s(const BlockIQ2_S& b, float* y) {
  const float d = h2f(b.d);
  for (int ib = 0; ib < 8; ++ib) {
    const float steps[2] = {d * (0.5f + static_cast<float>(b.scales[ib] & 0xF)) * 0.25f,
                            d * (0.5f + static_cast<float>(b.scales[ib] >> 4)) * 0.25f};
    for (int l = 0; l < 4; ++l, y += 8) {
      const int index = b.qs[4 * ib + l] | ((b.qh[ib] << (8 - 2 * l)) & 0x300);
      signed_row(kIq2sGrid[index], b.qs[32 + 4 * ib + l], steps[l / 2], y);
    }
  }
}

// 9-bit indices into 4-value rows: qs[8·ib + k] low 8 bits, bit k of qh[ib] the ninth; sign bytes
// signs[4·ib + l]; per 64 values a scale byte, odd steps d·(1 + 2s) (low nibble: the first 32).
void dequant_iq3_s(const BlockIQ3_S& b, float* y) {
  const float d = h2f(b.d);
  for (int ib = 0; ib < 8; ++ib) {
    const int s = ib % 2 ? b.scales[ib / 2] >> 4 : b.scales[ib / 2] & 0xF;
    const float step = d * static_cast<float>(1 + 2 * s);
    const uint8_t* index = b.qs + 8 * ib;
    for (int l = 0; l < 4; ++l, y += 8) {
      const uint32_t first = kIq3sGrid[index[2 * l] | ((b.qh[ib] << (8 - 2 * l)) & 256)];
      const uint32_t second = kIq3sGrid[index[2 * l + 1] | ((b.qh[ib] << (7 - 2 * l)) & 256)];
      const uint8_t signs = b.signs[4 * ib + l];
      for (int j = 0; j < 4; ++j) {
        y[j] = step * static_cast<float>(grid_byte(first, j)) * sign_of(signs, j);
        y[j + 4] = step * static_cast<float>(grid_byte(second, j)) * sign_of(signs, j + 4);
      }
    }
  }
}

// Value j of an IQ1 grid row: byte j as int8 (-1, 0 or 1).
inline int8_t grid_int8(uint64_t row, int j) { return static_cast<int8_t>(grid_byte(row, j)); }

// 8 values of an IQ1 grid row: step · (value + delta), ggml's dl * (grid[j] + delta).
inline void shifted_row(uint64_t row, float delta, float step, float* y) {
  for (int j = 0; j < 8; ++j) y[j] = step * (static_cast<float>(grid_int8(row, j)) + delta);
}

// Per 32 values a u16 qh: bits 3l..3l+2 the top of index l (qs[4·ib + l] the low 8), bits 12..14 a
// 3-bit scale (step d·(2s + 1)), bit 15 the sign of the shared delta.
void dequant_iq1_s(const BlockIQ1_S& b, float* y) {
  const float d = h2f(b.d);
  for (int ib = 0; ib < 8; ++ib) {
    const uint16_t qh = b.qh[ib];
    const float step = d * static_cast<float>(2 * ((qh >> 12) & 7) + 1);
    const float delta = qh & 0x8000 ? -kIq1Delta : kIq1Delta;
    for (int l = 0; l < 4; ++l, y += 8)
      shifted_row(kIq1sGrid[b.qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8)], delta, step, y);
  }
}

// Per 8 values a nibble of qh (3 index bits, then the delta's sign); per 16 values a 3-bit scale,
// four to a u16 word of scales (bits 0..11); the words' top nibbles make the fp16 d.
void dequant_iq1_m(const BlockIQ1_M& b, float* y) {
  uint16_t sc[4];
  std::memcpy(sc, b.scales, sizeof(sc));
  const uint16_t d16 = static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) |
                                             (sc[3] & 0xF000));
  const float d = h2f(d16);
  for (int ib = 0; ib < 8; ++ib) {
    for (int l = 0; l < 4; ++l, y += 8) {
      const int scale = (sc[ib / 2] >> (6 * (ib % 2) + 3 * (l / 2))) & 7;  // l 0, 1: first 16 values
      const float step = d * static_cast<float>(2 * scale + 1);
      const int nibble = (b.qh[2 * ib + l / 2] >> (4 * (l % 2))) & 0xF;
      const float delta = nibble & 8 ? -kIq1Delta : kIq1Delta;
      shifted_row(kIq1sGrid[b.qs[4 * ib + l] | ((nibble & 7) << 8)], delta, step, y);
    }
  }
}

template <class Block, void (*F)(const Block&, float*)>
void each_block(const void* src, float* dst, size_t blocks) {
  const auto* b = static_cast<const Block*>(src);
  for (size_t i = 0; i < blocks; ++i) F(b[i], dst + i * kSuperBlock);
}

}  // namespace

void dequantize_iq(DType t, const void* src, float* dst, size_t blocks) {
  switch (t) {
    case DType::IQ2_XXS: return each_block<BlockIQ2_XXS, dequant_iq2_xxs>(src, dst, blocks);
    case DType::IQ2_XS: return each_block<BlockIQ2_XS, dequant_iq2_xs>(src, dst, blocks);
    case DType::IQ2_S: return each_block<BlockIQ2_S, dequant_iq2_s>(src, dst, blocks);
    case DType::IQ3_XXS: return each_block<BlockIQ3_XXS, dequant_iq3_xxs>(src, dst, blocks);
    case DType::IQ3_S: return each_block<BlockIQ3_S, dequant_iq3_s>(src, dst, blocks);
    case DType::IQ1_S: return each_block<BlockIQ1_S, dequant_iq1_s>(src, dst, blocks);
    case DType::IQ1_M: return each_block<BlockIQ1_M, dequant_iq1_m>(src, dst, blocks);
    default: throw Error(std::string("dequantize: ") + dtype_name(t) + " is not an i-quant type");
  }
}

}  // namespace podkv::quant
