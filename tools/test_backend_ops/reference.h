// The test program's own reading of stored numbers, written from the format
// definitions rather than by calling podkv's converters, so that the CPU
// backend is checked too: IEEE half, bfloat16, and the Q8_0 blocks of weights
// (32 values: f16 scale, 32 int8) and of KV entries (kv/kv_entry.h: the same
// blocks, a head_dim that is not a multiple of 32 ending with a shorter one).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kv/kv_entry.h"
#include "util/dtype.h"

namespace podkv::backend_test {

double f16_value(uint16_t bits);
double bf16_value(uint16_t bits);

// Row r of a weight matrix [rows, cols] stored in `dtype`, in double.
std::vector<double> weight_row(DType dtype, const uint8_t* data, int64_t cols, int64_t r);
// Bytes of one row of `cols` values.
size_t weight_row_bytes(DType dtype, int64_t cols);

// One KV entry of d values.
std::vector<double> kv_entry_values(KvDType dtype, const uint8_t* entry, int64_t d);

// A random matrix [rows, cols] drawn directly in the stored encoding (random
// signs, exponents in a small range and mantissas; Q8_0: random scales and
// int8), so no encoder is needed and every value is exact. Values are below ~4.
std::vector<uint8_t> random_weight_bytes(DType dtype, int64_t rows, int64_t cols, std::mt19937_64& rng);

// Values k / 32 with integer |k| <= 127, each 32-block (and the last, shorter
// one) of every d-vector holding one ±127: exact in f32, f16, bf16 and
// q8_0 (whose scale is then exactly 1/32), so a KV cache of any entry type
// stores them unchanged. n values: n / d vectors of d.
std::vector<float> exact_kv_values(std::mt19937_64& rng, size_t n, int64_t d);

}  // namespace podkv::backend_test
