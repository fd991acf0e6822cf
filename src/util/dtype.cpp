#include "util/dtype.h"

#include "util/error.h"
#include "util/quant.h"
#include "util/simd.h"
#if defined(__F16C__) && !defined(__AVX2__)
#include <immintrin.h>
#endif

namespace podkv {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q8_0: return "Q8_0";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_1: return "Q4_1";
    case DType::Q5_0: return "Q5_0";
    case DType::Q5_1: return "Q5_1";
    case DType::Q2_K: return "Q2_K";
    case DType::Q3_K: return "Q3_K";
    case DType::Q4_K: return "Q4_K";
    case DType::Q5_K: return "Q5_K";
    case DType::Q6_K: return "Q6_K";
    case DType::IQ4_NL: return "IQ4_NL";
    case DType::IQ4_XS: return "IQ4_XS";
    case DType::IQ2_XXS: return "IQ2_XXS";
    case DType::IQ3_XXS: return "IQ3_XXS";
    case DType::IQ2_XS: return "IQ2_XS";
    case DType::IQ2_S: return "IQ2_S";
    case DType::IQ3_S: return "IQ3_S";
    case DType::IQ1_S: return "IQ1_S";
    case DType::IQ1_M: return "IQ1_M";
  }
  return "?";
}

size_t dtype_bytes(DType t, size_t count) {
  switch (t) {
    case DType::F32: case DType::I32: return count * 4;
    case DType::F16: case DType::BF16: return count * 2;
    case DType::I64: return count * 8;
    case DType::Q8_0: return count / kQ8BlockSize * kQ8BlockBytes;
    default: return count / static_cast<size_t>(dtype_block_size(t)) * dtype_block_bytes(t);
  }
}

bool dtype_is_quantized(DType t) { return dtype_block_size(t) > 1; }

int dtype_block_size(DType t) {
  switch (t) {
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::IQ4_NL:
      return 32;
    case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: case DType::IQ4_XS:
    case DType::IQ2_XXS: case DType::IQ2_XS: case DType::IQ2_S: case DType::IQ3_XXS: case DType::IQ3_S:
    case DType::IQ1_S: case DType::IQ1_M:
      return quant::kSuperBlock;
    default: return 1;
  }
}

size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::I64: return 8;
    case DType::Q8_0: return kQ8BlockBytes;
    default: return quant::block_bytes(t);
  }
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      mantissa &= 0x3ffu;
      bits = sign | (exponent << 23) | (mantissa << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;       // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;      // overflow to inf (rounded)
  if (abs < 0x38800000u) {                            // subnormal or zero in f16
    if (abs < 0x33000000u) return sign;               // rounds to zero
    const uint32_t exponent = abs >> 23;
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;            // 14 + (113 - exponent)
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

namespace {

// f16 / bf16 to float32, 16 (8) values a vector where the target has them: the weights' GEMM
// panels and every KV entry attention reads go through here (GCC 12 did not vectorise the scalar
// bf16 loop: a third of a CPU decode step at 8K tokens of context). Loads are unaligned, and the
// tail's through memcpy: `s` may sit at any byte of a mapped file.
uint16_t load16(const uint8_t* s, size_t i) {
  uint16_t h;
  std::memcpy(&h, s + 2 * i, 2);
  return h;
}

void widen_f16(const uint8_t* s, float* d, size_t n) {
  size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 2 * i))));
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2 * i))));
#endif
  for (; i < n; ++i) d[i] = f16_to_f32(load16(s, i));
}

// bf16 is a float's top half: widen to 32 bits and shift left 16.
void widen_bf16(const uint8_t* s, float* d, size_t n) {
  size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 2 * i)));
    _mm512_storeu_ps(d + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
  }
#elif defined(__AVX2__)
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2 * i)));
    _mm256_storeu_ps(d + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
  }
#endif
  for (; i < n; ++i) d[i] = bf16_to_f32(load16(s, i));
}

}  // namespace

void to_f32(DType t, const void* src, float* dst, size_t count) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, count * 4);
      return;
    case DType::F16: widen_f16(static_cast<const uint8_t*>(src), dst, count); return;
    case DType::BF16: widen_bf16(static_cast<const uint8_t*>(src), dst, count); return;
    case DType::Q8_0: {
      check(count % kQ8BlockSize == 0,
            "to_f32: Q8_0 count " + std::to_string(count) + " is not a multiple of 32");
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t b = 0; b < count / kQ8BlockSize; ++b) {
        const uint8_t* block = s + b * kQ8BlockBytes;
        uint16_t d16;
        std::memcpy(&d16, block, 2);
        const float d = f16_to_f32(d16);
        auto* q = reinterpret_cast<const int8_t*>(block + 2);
        for (int i = 0; i < kQ8BlockSize; ++i) dst[b * kQ8BlockSize + i] = d * q[i];
      }
      return;
    }
    case DType::I32: case DType::I64:
      throw Error(std::string("to_f32: integer dtype ") + dtype_name(t) + " is not a weight type");
    default: {
      const auto block = static_cast<size_t>(dtype_block_size(t));
      check(count % block == 0, std::string("to_f32: ") + dtype_name(t) + " count " + std::to_string(count) +
                                    " is not a multiple of " + std::to_string(block));
      quant::dequantize(t, src, dst, count / block);
      return;
    }
  }
}

}  // namespace podkv
