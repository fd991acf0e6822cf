// Element types of stored tensors, and scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace podkv {

// Q8_0 is ggml's block format: blocks of 32 values, each an fp16 scale d
// followed by 32 int8 q; value = d * q. 34 bytes per block. The other Q types
// are llama.cpp's block formats (layouts in util/quant.h): Q4_0..Q5_1 and IQ4_NL in
// blocks of 32 values, the K-quants Q2_K..Q6_K, IQ4_XS and the grid i-quants (IQ2_XXS .. IQ1_M)
// in super-blocks of 256.
enum class DType {
  F32, F16, BF16, Q8_0, I32, I64, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS,
  IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M
};

constexpr int kQ8BlockSize = 32;
constexpr int kQ8BlockBytes = 34;

const char* dtype_name(DType t);

// Bytes needed for `count` elements (count must be a multiple of the block size
// for the block types).
size_t dtype_bytes(DType t, size_t count);

// Block types (Q8_0 and the llama.cpp Q types): elements per block (32 or 256)
// and bytes per block; 1 and the element size for the others.
bool dtype_is_quantized(DType t);
int dtype_block_size(DType t);
size_t dtype_block_bytes(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as PyTorch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts `count` elements of type `t` at `src` to float32 (block types: count
// a multiple of the block size).
void to_f32(DType t, const void* src, float* dst, size_t count);

}  // namespace podkv
