#include "util/dtype.h"

#include "util/error.h"
#include "util/quant.h"

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
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: return 32;
    case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return quant::kSuperBlock;
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

void to_f32(DType t, const void* src, float* dst, size_t count) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, count * 4);
      return;
    // Loads through memcpy: `src` may sit at any byte of a mapped file.
    case DType::F16: {
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    }
    case DType::BF16: {
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    }
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
