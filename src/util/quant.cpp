// Reference dequantizers and quantizers of llama.cpp's block formats (layouts in
// quant.h). These are the oracle the vectorised kernels (ops/quant_gemv.cpp) are
// tested against, and the path the prefill GEMM widens its panels with.
#include "util/quant.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>

#include "util/error.h"

namespace podkv::quant {
namespace {

inline float h2f(uint16_t h) { return f16_to_f32(h); }

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

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

template <class Block, void (*F)(const Block&, float*)>
void each_block(const void* src, float* dst, size_t blocks, int per_block) {
  const auto* b = static_cast<const Block*>(src);
  for (size_t i = 0; i < blocks; ++i) F(b[i], dst + i * per_block);
}

// The value of largest magnitude, with its sign (ggml's "max" for the symmetric types).
float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void min_max(const float* x, int n, float& min, float& max) {
  min = FLT_MAX;
  max = -FLT_MAX;
  for (int j = 0; j < n; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
}

void check_count(size_t count, const char* who) {
  check(count % kBlock == 0, std::string(who) + ": " + std::to_string(count) + " values is not a multiple of 32");
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
    default: throw Error(std::string("dequantize: ") + dtype_name(t) + " is not a block type");
  }
}

void quantize_q4_0(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q4_0");
  auto* out = reinterpret_cast<BlockQ4_0*>(dst);
  for (size_t b = 0; b < count / kBlock; ++b) {
    const float* x = src + b * kBlock;
    const float d = signed_absmax(x, kBlock) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = f32_to_f16(d);
    for (int j = 0; j < 16; ++j) {
      const int x0 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int x1 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
      out[b].qs[j] = static_cast<uint8_t>(x0 | (x1 << 4));
    }
  }
}

void quantize_q4_1(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q4_1");
  auto* out = reinterpret_cast<BlockQ4_1*>(dst);
  for (size_t b = 0; b < count / kBlock; ++b) {
    const float* x = src + b * kBlock;
    float min, max;
    min_max(x, kBlock, min, max);
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = f32_to_f16(d);
    out[b].m = f32_to_f16(min);
    for (int j = 0; j < 16; ++j) {
      const int x0 = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - min) * id + 0.5f)));
      const int x1 = std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - min) * id + 0.5f)));
      out[b].qs[j] = static_cast<uint8_t>(x0 | (x1 << 4));
    }
  }
}

void quantize_q5_0(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q5_0");
  auto* out = reinterpret_cast<BlockQ5_0*>(dst);
  for (size_t b = 0; b < count / kBlock; ++b) {
    const float* x = src + b * kBlock;
    const float d = signed_absmax(x, kBlock) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const int x0 = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
      const int x1 = std::min(31, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 16.5f)));
      out[b].qs[j] = static_cast<uint8_t>((x0 & 0xF) | ((x1 & 0xF) << 4));
      qh |= static_cast<uint32_t>((x0 & 0x10) >> 4) << j;
      qh |= static_cast<uint32_t>((x1 & 0x10) >> 4) << (j + 16);
    }
    std::memcpy(out[b].qh, &qh, 4);
  }
}

void quantize_q5_1(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q5_1");
  auto* out = reinterpret_cast<BlockQ5_1*>(dst);
  for (size_t b = 0; b < count / kBlock; ++b) {
    const float* x = src + b * kBlock;
    float min, max;
    min_max(x, kBlock, min, max);
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = f32_to_f16(d);
    out[b].m = f32_to_f16(min);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const int x0 = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
      const int x1 = static_cast<uint8_t>((x[j + 16] - min) * id + 0.5f);
      out[b].qs[j] = static_cast<uint8_t>((x0 & 0xF) | ((x1 & 0xF) << 4));
      qh |= static_cast<uint32_t>((x0 & 0x10) >> 4) << j;
      qh |= static_cast<uint32_t>((x1 & 0x10) >> 4) << (j + 16);
    }
    std::memcpy(out[b].qh, &qh, 4);
  }
}

void quantize_q4_k(const float* src, uint8_t* dst, size_t count) {
  check(count % kSuperBlock == 0, "quantize_q4_k: " + std::to_string(count) + " values is not a multiple of 256");
  auto* out = reinterpret_cast<BlockQ4_K*>(dst);
  for (size_t b = 0; b < count / kSuperBlock; ++b) {
    const float* x = src + b * kSuperBlock;
    float scale[8], min[8], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; ++j) {
      float lo, hi;
      min_max(x + 32 * j, 32, lo, hi);
      lo = std::min(lo, 0.0f);  // the format subtracts a non-negative min
      scale[j] = (hi - lo) / 15.0f;
      min[j] = -lo;
      max_scale = std::max(max_scale, scale[j]);
      max_min = std::max(max_min, min[j]);
    }
    out[b].d = f32_to_f16(max_scale / 63.0f);
    out[b].dmin = f32_to_f16(max_min / 63.0f);
    const float d = f16_to_f32(out[b].d), dmin = f16_to_f32(out[b].dmin);
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
      ls[j] = static_cast<uint8_t>(d > 0 ? std::clamp(static_cast<int>(std::lround(scale[j] / d)), 0, 63) : 0);
      lm[j] = static_cast<uint8_t>(dmin > 0 ? std::clamp(static_cast<int>(std::lround(min[j] / dmin)), 0, 63) : 0);
    }
    for (int k = 0; k < 4; ++k) {
      out[b].scales[k] = static_cast<uint8_t>(ls[k] | ((ls[k + 4] >> 4) << 6));
      out[b].scales[k + 4] = static_cast<uint8_t>(lm[k] | ((lm[k + 4] >> 4) << 6));
      out[b].scales[k + 8] = static_cast<uint8_t>((ls[k + 4] & 15) | ((lm[k + 4] & 15) << 4));
    }
    uint8_t q[kSuperBlock];
    for (int j = 0; j < 8; ++j) {
      const float dl = d * ls[j], ml = dmin * lm[j];
      for (int l = 0; l < 32; ++l) {
        const int v = dl > 0 ? static_cast<int>(std::lround((x[32 * j + l] + ml) / dl)) : 0;
        q[32 * j + l] = static_cast<uint8_t>(std::clamp(v, 0, 15));
      }
    }
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) out[b].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void quantize_q6_k(const float* src, uint8_t* dst, size_t count) {
  check(count % kSuperBlock == 0, "quantize_q6_k: " + std::to_string(count) + " values is not a multiple of 256");
  auto* out = reinterpret_cast<BlockQ6_K*>(dst);
  for (size_t b = 0; b < count / kSuperBlock; ++b) {
    const float* x = src + b * kSuperBlock;
    float scale[16], max_scale = 0.0f;  // max_scale: the scale of largest magnitude, signed
    for (int j = 0; j < 16; ++j) {
      float extreme = 0.0f;  // the value of largest magnitude
      for (int l = 0; l < 16; ++l)
        if (std::fabs(x[16 * j + l]) > std::fabs(extreme)) extreme = x[16 * j + l];
      scale[j] = extreme / -32.0f;
      if (std::fabs(scale[j]) > std::fabs(max_scale)) max_scale = scale[j];
    }
    BlockQ6_K& y = out[b];
    uint8_t q[kSuperBlock];  // q + 32, 0..63
    if (max_scale == 0.0f) {
      y.d = f32_to_f16(0.0f);
      std::fill(y.scales, y.scales + 16, int8_t{0});
      std::fill(q, q + kSuperBlock, uint8_t{32});
    } else {
      const float iscale = -128.0f / max_scale;
      y.d = f32_to_f16(1.0f / iscale);
      const float d = f16_to_f32(y.d);
      for (int j = 0; j < 16; ++j) {
        y.scales[j] = static_cast<int8_t>(std::clamp(static_cast<int>(std::lround(iscale * scale[j])), -128, 127));
        const float step = d * static_cast<float>(y.scales[j]);
        for (int l = 0; l < 16; ++l) {
          const int v = step != 0.0f ? static_cast<int>(std::lround(x[16 * j + l] / step)) : 0;
          q[16 * j + l] = static_cast<uint8_t>(std::clamp(v, -32, 31) + 32);
        }
      }
    }
    // per half of 128: ql[l] = values l | l + 64 (low, high nibble), ql[l + 32] = l + 32 | l + 96,
    // qh[l] = the top two bits of l, l + 32, l + 64, l + 96
    for (int h = 0; h < 2; ++h) {
      const uint8_t* v = q + 128 * h;
      uint8_t* ql = y.ql + 64 * h;
      uint8_t* qh = y.qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((v[l] & 0xF) | ((v[l + 64] & 0xF) << 4));
        ql[l + 32] = static_cast<uint8_t>((v[l + 32] & 0xF) | ((v[l + 96] & 0xF) << 4));
        qh[l] = static_cast<uint8_t>((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) | ((v[l + 96] >> 4) << 6));
      }
    }
  }
}

}  // namespace podkv::quant
