#include "reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/error.h"

namespace podkv::backend_test {

namespace {

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace

double f16_value(uint16_t bits) {
  const double sign = bits & 0x8000 ? -1.0 : 1.0;
  const int exponent = (bits >> 10) & 31;
  const int mantissa = bits & 1023;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);  // subnormal
  if (exponent == 31) return mantissa ? NAN : sign * INFINITY;
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

double bf16_value(uint16_t bits) {
  const uint32_t f32 = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &f32, 4);
  return f;
}

size_t weight_row_bytes(DType dtype, int64_t cols) {
  switch (dtype) {
    case DType::F32: return 4 * cols;
    case DType::F16:
    case DType::BF16: return 2 * cols;
    case DType::Q8_0: return cols / 32 * 34;
    default: throw Error("weight_row_bytes: not a weight dtype");
  }
}

std::vector<double> weight_row(DType dtype, const uint8_t* data, int64_t cols, int64_t r) {
  const uint8_t* row = data + r * weight_row_bytes(dtype, cols);
  std::vector<double> x(cols);
  for (int64_t i = 0; i < cols; ++i) {
    switch (dtype) {
      case DType::F32: {
        float f;
        std::memcpy(&f, row + 4 * i, 4);
        x[i] = f;
        break;
      }
      case DType::F16: x[i] = f16_value(load_u16(row + 2 * i)); break;
      case DType::BF16: x[i] = bf16_value(load_u16(row + 2 * i)); break;
      case DType::Q8_0: {
        const uint8_t* block = row + (i / 32) * 34;
        x[i] = f16_value(load_u16(block)) * static_cast<int8_t>(block[2 + i % 32]);
        break;
      }
      default: throw Error("weight_row: not a weight dtype");
    }
  }
  return x;
}

std::vector<double> kv_entry_values(KvDType dtype, const uint8_t* entry, int64_t d) {
  std::vector<double> x(d);
  for (int64_t i = 0; i < d; ++i) {
    switch (dtype) {
      case KvDType::F32: {
        float f;
        std::memcpy(&f, entry + 4 * i, 4);
        x[i] = f;
        break;
      }
      case KvDType::F16: x[i] = f16_value(load_u16(entry + 2 * i)); break;
      case KvDType::BF16: x[i] = bf16_value(load_u16(entry + 2 * i)); break;
      case KvDType::Q8_0: {
        // Full blocks are 34 bytes; block b starts at 34 b.
        const uint8_t* block = entry + (i / 32) * 34;
        x[i] = f16_value(load_u16(block)) * static_cast<int8_t>(block[2 + i % 32]);
        break;
      }
    }
  }
  return x;
}

std::vector<uint8_t> random_weight_bytes(DType dtype, int64_t rows, int64_t cols, std::mt19937_64& rng) {
  std::vector<uint8_t> bytes(rows * weight_row_bytes(dtype, cols));
  auto bits = [&](int n) { return static_cast<uint32_t>(rng() & ((1ull << n) - 1)); };
  auto put16 = [&](size_t at, uint16_t v) { std::memcpy(&bytes[at], &v, 2); };
  const int64_t n = rows * cols;
  switch (dtype) {
    case DType::F32: {
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (int64_t i = 0; i < n; ++i) {
        const float f = normal(rng);
        std::memcpy(&bytes[4 * i], &f, 4);
      }
      break;
    }
    case DType::F16:  // exponent field 11..16: magnitudes in [1/16, 4)
      for (int64_t i = 0; i < n; ++i) put16(2 * i, static_cast<uint16_t>(bits(1) << 15 | (11 + rng() % 6) << 10 | bits(10)));
      break;
    case DType::BF16:  // exponent field 123..128: magnitudes in [1/16, 4)
      for (int64_t i = 0; i < n; ++i) put16(2 * i, static_cast<uint16_t>(bits(1) << 15 | (123 + rng() % 6) << 7 | bits(7)));
      break;
    case DType::Q8_0:  // scales of exponent field 6..9 (2^-9 .. 2^-5), int8 in [-127, 127]
      for (size_t at = 0; at < bytes.size(); at += 34) {
        put16(at, static_cast<uint16_t>((6 + rng() % 4) << 10 | bits(10)));
        for (int i = 0; i < 32; ++i) bytes[at + 2 + i] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(rng() % 255) - 127));
      }
      break;
    default: throw Error("random_weight_bytes: not a weight dtype");
  }
  return bytes;
}

std::vector<float> exact_kv_values(std::mt19937_64& rng, size_t n, int64_t d) {
  std::vector<float> x(n);
  for (float& v : x) v = static_cast<float>(static_cast<int>(rng() % 255) - 127) / 32.0f;
  for (size_t start = 0; start + d <= n; start += d)
    for (int64_t b = 0; b < d; b += 32) {
      const int64_t len = std::min<int64_t>(32, d - b);
      x[start + b + rng() % len] = (rng() & 1 ? 127.0f : -127.0f) / 32.0f;
    }
  return x;
}

}  // namespace podkv::backend_test
