#include "kv/kv_entry.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/dtype.h"
#include "util/error.h"

#if defined(__F16C__)
#include <immintrin.h>  // kv_encode's f16 conversion
#endif

namespace podkv {

namespace {
constexpr int64_t kBlock = 32;
}  // namespace

const char* kv_dtype_name(KvDType t) {
  switch (t) {
    case KvDType::F32: return "f32";
    case KvDType::F16: return "f16";
    case KvDType::BF16: return "bf16";
    case KvDType::Q8_0: return "q8_0";
  }
  return "?";
}

KvDType parse_kv_dtype(const std::string& name) {
  if (name == "f32") return KvDType::F32;
  if (name == "f16") return KvDType::F16;
  if (name == "bf16") return KvDType::BF16;
  if (name == "q8_0") return KvDType::Q8_0;
  throw Error("--kv-dtype: unknown KV entry type '" + name + "' (known: f32, f16, bf16, q8_0)");
}

KvDType default_kv_dtype(DType weights) {
  switch (weights) {
    case DType::F32: return KvDType::F32;
    case DType::BF16: return KvDType::BF16;
    default: return KvDType::F16;
  }
}

KvDType kv_dtype_or_default(const std::string& name, DType weights) {
  return name.empty() ? default_kv_dtype(weights) : parse_kv_dtype(name);
}

size_t kv_entry_bytes(KvDType t, int64_t head_dim) {
  const size_t d = static_cast<size_t>(head_dim);
  switch (t) {
    case KvDType::F32: return 4 * d;
    case KvDType::F16:
    case KvDType::BF16: return 2 * d;
    case KvDType::Q8_0: return d + 2 * ((d + kBlock - 1) / kBlock);
  }
  return 0;
}

void kv_encode(KvDType t, const float* x, int64_t d, uint8_t* entry) {
  switch (t) {
    case KvDType::F32: std::memcpy(entry, x, 4 * d); return;
    case KvDType::F16: {
      int64_t i = 0;
#if defined(__F16C__)
      for (; i + 8 <= d; i += 8)  // round to nearest even, as f32_to_f16
        _mm_storeu_si128(reinterpret_cast<__m128i*>(entry + 2 * i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
      for (; i < d; ++i) {
        const uint16_t h = f32_to_f16(x[i]);
        std::memcpy(entry + 2 * i, &h, 2);
      }
      return;
    }
    case KvDType::BF16:
      for (int64_t i = 0; i < d; ++i) {
        const uint16_t h = f32_to_bf16(x[i]);
        std::memcpy(entry + 2 * i, &h, 2);
      }
      return;
    case KvDType::Q8_0:
      for (int64_t b = 0; b < d; b += kBlock) {
        const int64_t n = std::min(kBlock, d - b);
        float amax = 0.0f;
        for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[b + i]));
        const float scale = amax / 127.0f;
        const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        const uint16_t s = f32_to_f16(scale);
        std::memcpy(entry, &s, 2);
        auto* q = reinterpret_cast<int8_t*>(entry + 2);
        for (int64_t i = 0; i < n; ++i) q[i] = static_cast<int8_t>(std::lround(x[b + i] * inv));
        entry += 2 + n;
      }
      return;
  }
}

void kv_decode(KvDType t, const uint8_t* entry, int64_t d, float* x) {
  switch (t) {
    case KvDType::F32: std::memcpy(x, entry, 4 * d); return;
    // Both vectorised there (attention decodes every key and value it reads).
    case KvDType::F16: to_f32(DType::F16, entry, x, static_cast<size_t>(d)); return;
    case KvDType::BF16: to_f32(DType::BF16, entry, x, static_cast<size_t>(d)); return;
    case KvDType::Q8_0:
      for (int64_t b = 0; b < d; b += kBlock) {
        const int64_t n = std::min(kBlock, d - b);
        uint16_t s;
        std::memcpy(&s, entry, 2);
        const float scale = f16_to_f32(s);
        const auto* q = reinterpret_cast<const int8_t*>(entry + 2);
        for (int64_t i = 0; i < n; ++i) x[b + i] = scale * static_cast<float>(q[i]);
        entry += 2 + n;
      }
      return;
  }
}

}  // namespace podkv
