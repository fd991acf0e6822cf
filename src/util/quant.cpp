// Reference dequantizers of llama.cpp's block formats (layouts in quant.h; the
// quantizers are quantize.cpp's). These are the oracle the vectorised kernels (ops/quant_gemv.cpp) are
// tested against, and the path the prefill GEMM widens its panels with.
#include "util/quant.h"

#include <cmath>
#include <cstring>
#include <string>

#include "util/error.h"

namespace podkv::quant {
namespace {

void dequant_q4_0(const BlockQ4_0& b, float* y) {
  const float d = h2f(b.d);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>((b.qs[j] & 0xF) - 8);
    y[j + 16] = d * static_cast<float>((b.qs[j] >> 4) - 8);
  }
}

void dequant_q4_1(const BlockQ4_1& b, float* y) {
  const float d = h2f(b.d), m = h2f(b.m);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(b.qs[j] & 0xF) * d + m;
    y[j + 16] = static_cast<float>(b.qs[j] >> 4) * d + m;
  }
}

void dequant_q5_0(const BlockQ5_0& b, float* y) {
  const float d = h2f(b.d);
  const uint32_t qh = load_u32(b.qh);
  for (int j = 0; j < 16; ++j) {
    const int x0 = (b.qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int x1 = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(x0 - 16);
    y[j + 16] = d * static_cast<float>(x1 - 16);
  }
}

void dequant_q5_1(const BlockQ5_1& b, float* y) {
  const float d = h2f(b.d), m = h2f(b.m);
  const uint32_t qh = load_u32(b.qh);
  for (int j = 0; j < 16; ++j) {
    const int x0 = (b.qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int x1 = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = static_cast<float>(x0) * d + m;
    y[j + 16] = static_cast<float>(x1) * d + m;
  }
}

// Two halves of 128; in each, four 2-bit planes (shift 0, 2, 4, 6) of 32 bytes,
// each plane two sub-blocks of 16 with a 4-bit scale (low) and 4-bit min (high).
void dequant_q2_k(const BlockQ2_K& b, float* y) {
  const float d = h2f(b.d), dmin = h2f(b.dmin);
  int is = 0;
  for (int half = 0; half < 2; ++half) {
    const uint8_t* q = b.qs + 32 * half;
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part) {
        const uint8_t sc = b.scales[is++];
        const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[16 * part + l] >> shift) & 3) - ml;
      }
    }
  }
}

// As Q2_K, plus a high bit per value in hmask (bit set: +0, clear: −4), and
// 16 signed 6-bit scales.
void dequant_q3_k(const BlockQ3_K& b, float* y) {
  const float d = h2f(b.d);
  int8_t scales[16];
  q3_k_scales(b.scales, scales);
  int is = 0;
  uint8_t m = 1;
  for (int half = 0; half < 2; ++half) {
    const uint8_t* q = b.qs + 32 * half;
    for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
      for (int part = 0; part < 2; ++part) {
        const float dl = d * static_cast<float>(scales[is++]);
        for (int l = 16 * part; l < 16 * part + 16; ++l) {
          const int v = ((q[l] >> shift) & 3) - ((b.hmask[l] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
    }
  }
}

// Four chunks of 64: 32 bytes whose low nibbles are the first 32 values
// (sub-block 2c) and high nibbles the next 32 (sub-block 2c + 1).
void dequant_q4_k(const BlockQ4_K& b, float* y) {
  const float d = h2f(b.d), dmin = h2f(b.dmin);
  for (int c = 0; c < 4; ++c) {
    const uint8_t* q = b.qs + 32 * c;
    uint8_t sc, mn;
    k4_scale_min(2 * c, b.scales, sc, mn);
    const float d1 = d * sc, m1 = dmin * mn;
    k4_scale_min(2 * c + 1, b.scales, sc, mn);
    const float d2 = d * sc, m2 = dmin * mn;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
  }
}

// Q4_K plus a fifth bit: bit 2c of qh[l] for the low nibbles of chunk c, bit 2c + 1 for the high.
void dequant_q5_k(const BlockQ5_K& b, float* y) {
  const float d = h2f(b.d), dmin = h2f(b.dmin);
  for (int c = 0; c < 4; ++c) {
    const uint8_t* q = b.qs + 32 * c;
    uint8_t sc, mn;
    k4_scale_min(2 * c, b.scales, sc, mn);
    const float d1 = d * sc, m1 = dmin * mn;
    k4_scale_min(2 * c + 1, b.scales, sc, mn);
    const float d2 = d * sc, m2 = dmin * mn;
    const uint8_t u1 = static_cast<uint8_t>(1u << (2 * c)), u2 = static_cast<uint8_t>(2u << (2 * c));
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((q[l] & 0xF) + (b.qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((q[l] >> 4) + (b.qh[l] & u2 ? 16 : 0)) - m2;
  }
}

// Two halves of 128 values; in half h, value l + 32k (l < 32, k < 4) takes a
// nibble of ql[64h + l] (k = 0, 2) or ql[64h + 32 + l] (k = 1, 3) and 2 bits
// (2k) of qh[32h + l], minus 32; scale scales[8h + l / 16 + 2k].
void dequant_q6_k(const BlockQ6_K& b, float* y) {
  const float d = h2f(b.d);
  for (int half = 0; half < 2; ++half) {
    const uint8_t* ql = b.ql + 64 * half;
    const uint8_t* qh = b.qh + 32 * half;
    const int8_t* sc = b.scales + 8 * half;
    float* out = y + 128 * half;
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      out[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      out[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      out[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      out[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

// Value j < 16 from the low nibble of qs[j], 16 + j from its high nibble, as Q4_0; through the table.
void dequant_iq4_nl(const BlockIQ4_NL& b, float* y) {
  const float d = h2f(b.d);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(kIq4Values[b.qs[j] & 0xF]);
    y[j + 16] = d * static_cast<float>(kIq4Values[b.qs[j] >> 4]);
  }
}

// Eight IQ4_NL-ordered sub-blocks of 32, each with the step d·(ls − 32).
void dequant_iq4_xs(const BlockIQ4_XS& b, float* y) {
  const float d = h2f(b.d);
  for (int ib = 0; ib < 8; ++ib, y += 32) {
    const float dl = d * static_cast<float>(iq4_xs_scale(b, ib));
    const uint8_t* q = b.qs + 16 * ib;
    for (int j = 0; j < 16; ++j) {
      y[j] = dl * static_cast<float>(kIq4Values[q[j] & 0xF]);
      y[j + 16] = dl * static_cast<float>(kIq4Values[q[j] >> 4]);
    }
  }
}

template <class Block, void (*F)(const Block&, float*)>
void each_block(const void* src, float* dst, size_t blocks, int per_block) {
  const auto* b = static_cast<const Block*>(src);
  for (size_t i = 0; i < blocks; ++i) F(b[i], dst + i * per_block);
}

}  // namespace

size_t block_bytes(DType t) {
  switch (t) {
    case DType::Q4_0: return sizeof(BlockQ4_0);
    case DType::Q4_1: return sizeof(BlockQ4_1);
    case DType::Q5_0: return sizeof(BlockQ5_0);
    case DType::Q5_1: return sizeof(BlockQ5_1);
    case DType::Q2_K: return sizeof(BlockQ2_K);
    case DType::Q3_K: return sizeof(BlockQ3_K);
    case DType::Q4_K: return sizeof(BlockQ4_K);
    case DType::Q5_K: return sizeof(BlockQ5_K);
    case DType::Q6_K: return sizeof(BlockQ6_K);
    case DType::IQ4_NL: return sizeof(BlockIQ4_NL);
    case DType::IQ4_XS: return sizeof(BlockIQ4_XS);
    case DType::IQ2_XXS: return sizeof(BlockIQ2_XXS);
    case DType::IQ3_XXS: return sizeof(BlockIQ3_XXS);
    case DType::IQ2_XS: return sizeof(BlockIQ2_XS);
    case DType::IQ2_S: return sizeof(BlockIQ2_S);
    case DType::IQ3_S: return sizeof(BlockIQ3_S);
    case DType::IQ1_S: return sizeof(BlockIQ1_S);
    case DType::IQ1_M: return sizeof(BlockIQ1_M);
    default: return 0;
  }
}

void k4_scale_min(int j, const uint8_t* q, uint8_t& scale, uint8_t& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    min = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Scale i's low 4 bits are the low (i < 8) or high (i ≥ 8) nibble of byte i % 8;
// its high 2 bits are bits 2·(i / 4) .. +1 of byte 8 + i % 4.
void q3_k_scales(const uint8_t* packed, int8_t out[16]) {
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? (packed[i] & 0xF) : (packed[i - 8] >> 4);
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    out[i] = static_cast<int8_t>((low | (high << 4)) - 32);
  }
}

int iq4_xs_scale(const BlockIQ4_XS& b, int ib) {
  const int low = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
  const int high = (b.scales_h >> (2 * ib)) & 3;
  return (low | (high << 4)) - 32;
}

void dequantize(DType t, const void* src, float* dst, size_t blocks) {
  switch (t) {
    case DType::Q4_0: return each_block<BlockQ4_0, dequant_q4_0>(src, dst, blocks, kBlock);
    case DType::Q4_1: return each_block<BlockQ4_1, dequant_q4_1>(src, dst, blocks, kBlock);
    case DType::Q5_0: return each_block<BlockQ5_0, dequant_q5_0>(src, dst, blocks, kBlock);
    case DType::Q5_1: return each_block<BlockQ5_1, dequant_q5_1>(src, dst, blocks, kBlock);
    case DType::Q8_0: return to_f32(t, src, dst, blocks * kBlock);
    case DType::Q2_K: return each_block<BlockQ2_K, dequant_q2_k>(src, dst, blocks, kSuperBlock);
    case DType::Q3_K: return each_block<BlockQ3_K, dequant_q3_k>(src, dst, blocks, kSuperBlock);
    case DType::Q4_K: return each_block<BlockQ4_K, dequant_q4_k>(src, dst, blocks, kSuperBlock);
    case DType::Q5_K: return each_block<BlockQ5_K, dequant_q5_k>(src, dst, blocks, kSuperBlock);
    case DType::Q6_K: return each_block<BlockQ6_K, dequant_q6_k>(src, dst, blocks, kSuperBlock);
    case DType::IQ4_NL: return each_block<BlockIQ4_NL, dequant_iq4_nl>(src, dst, blocks, kBlock);
    case DType::IQ4_XS: return each_block<BlockIQ4_XS, dequant_iq4_xs>(src, dst, blocks, kSuperBlock);
    case DType::IQ2_XXS: case DType::IQ2_XS: case DType::IQ2_S: case DType::IQ3_XXS: case DType::IQ3_S:
    case DType::IQ1_S: case DType::IQ1_M:
      return dequantize_iq(t, src, dst, blocks);
    default: throw Error(std::string("dequantize: ") + dtype_name(t) + " is not a block type");
  }
}

}  // namespace podkv::quant
