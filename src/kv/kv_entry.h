// KV entry types: how one head_dim-vector of keys or values is stored in the
// cache pool. Keys and values are encoded when written and decoded inside
// attention (to float32 tiles), so attention arithmetic stays float32.
//   f32   4·d bytes
//   f16   2·d bytes (IEEE half, round to nearest even)
//   bf16  2·d bytes (round to nearest even)
//   q8_0  llama.cpp's q8_0 cache format: blocks of 32 values, each an f16
//         scale s = max|x| / 127 followed by 32 int8 q = round(x / s);
//         34 bytes per block. A head_dim that is not a multiple of 32 ends
//         with one shorter block (2 + d % 32 bytes).
// Entries are byte-addressed and may be unaligned: read through memcpy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "util/dtype.h"

namespace podkv {

enum class KvDType { F32, F16, BF16, Q8_0 };

const char* kv_dtype_name(KvDType t);
// "f32", "f16", "bf16" or "q8_0"; throws Error naming --kv-dtype otherwise.
KvDType parse_kv_dtype(const std::string& name);
// The entry type a cache gets by default: the model's own float type (f32
// models keep an f32 cache; f16 and bf16 models a cache of their type), f16
// for quantized weights (as llama.cpp).
KvDType default_kv_dtype(DType weights);
// `name` when given, else default_kv_dtype(weights).
KvDType kv_dtype_or_default(const std::string& name, DType weights);
// Bytes of one entry of `head_dim` values.
size_t kv_entry_bytes(KvDType t, int64_t head_dim);

// x [d] -> entry bytes; entry bytes -> x [d].
void kv_encode(KvDType t, const float* x, int64_t d, uint8_t* entry);
void kv_decode(KvDType t, const uint8_t* entry, int64_t d, float* x);

}  // namespace podkv
