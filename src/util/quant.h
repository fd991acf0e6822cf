// llama.cpp's quantized block formats (ggml-common.h), read in place from GGUF
// files, with plain reference dequantizers and the simple quantizers podkv
// writes. All scales d / dmin / m are IEEE fp16.
//
// Blocks of 32 values (QK = 32), element j of the block:
//   Q4_0 {d; qs[16]}          18 B  v = d·(q − 8),   q = low nibble of qs[j] (j < 16) or high nibble of qs[j−16]
//   Q4_1 {d; m; qs[16]}       20 B  v = d·q + m,     q as in Q4_0
//   Q5_0 {d; qh[4]; qs[16]}   22 B  v = d·(q − 16),  q = nibble as in Q4_0 | bit j of the little-endian u32 qh << 4
//   Q5_1 {d; m; qh[4]; qs[16]} 24 B v = d·q + m,     q as in Q5_0
//   Q8_0 {d; qs[32] int8}     34 B  v = d·q (in util/dtype.h)
//   IQ4_NL {d; qs[16]}        18 B  v = d·kIq4Values[q], q the nibble as in Q4_0
// Super-blocks of 256 values (QK_K = 256), split into sub-blocks of 16 or 32
// with 4-, 6- or 8-bit sub-block scales:
//   Q2_K {scales[16]; qs[64]; d; dmin}               84 B
//   Q3_K {hmask[32]; qs[64]; scales[12]; d}         110 B
//   Q4_K {d; dmin; scales[12]; qs[128]}             144 B
//   Q5_K {d; dmin; scales[12]; qh[32]; qs[128]}     176 B
//   Q6_K {ql[128]; qh[64]; scales[16] int8; d}      210 B
//   IQ4_XS {d; scales_h; scales_l[4]; qs[128]}      136 B  eight IQ4_NL sub-blocks of 32 (bytes
//          qs[16·ib ..]) with v = d·(ls − 32)·kIq4Values[q], ls the 6-bit scale: the nibble ib % 2
//          of scales_l[ib / 2] | bits 2·ib..2·ib + 1 of the u16 scales_h << 4
// The i-quants (super-blocks of 256; rows of ggml's grids, util/iq_grids.h, picked by index, 8 values
// a row, IQ3: 4; IQ2 / IQ3 values are magnitudes with separate sign bits):
//   IQ2_XXS {d; qs[32] u16}                         66 B  per 32 values: 4 grid bytes, then a u32 of
//          four 7-bit sign codes and a 4-bit scale
//   IQ2_XS  {d; qs[32] u16; scales[8]}              74 B  per 8 values a u16: 9-bit index, 7-bit sign code
//   IQ2_S   {d; qs[64]; qh[8]; scales[8]}           82 B  10-bit indices (qs[0..31] + 2 bits of qh),
//          sign bytes qs[32..63]
//   IQ3_XXS {d; qs[96]}                             98 B  64 grid bytes, then per 32 values a u32
//          as IQ2_XXS's
//   IQ3_S   {d; qs[64]; qh[8]; signs[32]; scales[4]} 110 B 9-bit indices, sign bytes, 4-bit odd scales
//   IQ1_S   {d; qs[32]; qh[8] u16}                  50 B  11-bit indices into a grid of -1/0/+1,
//          plus a shared ±kIq1Delta per 32 values
//   IQ1_M   {qs[32]; qh[16]; scales[8]}             56 B  as IQ1_S with 3-bit scales per 16 values;
//          the fp16 d is the top nibbles of the four u16 words of scales
// The element order inside a super-block is spelled out in dequantize() (quant.cpp, quant_iq.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "util/dtype.h"

namespace podkv::quant {

constexpr int kBlock = 32;        // QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0
constexpr int kSuperBlock = 256;  // QK_K

// A block's fp16 scale as a float (ggml's GGML_FP16_TO_FP32), and four bytes of a block as the
// little-endian u32 ggml reads them: the dequantizers' two readers.
inline float h2f(uint16_t h) { return f16_to_f32(h); }
inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[16]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
struct BlockQ3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct BlockIQ4_NL { uint16_t d; uint8_t qs[16]; };
struct BlockIQ4_XS { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136);
struct BlockIQ2_XXS { uint16_t d; uint16_t qs[32]; };
struct BlockIQ2_XS { uint16_t d; uint16_t qs[32]; uint8_t scales[8]; };
struct BlockIQ2_S { uint16_t d; uint8_t qs[64]; uint8_t qh[8]; uint8_t scales[8]; };
struct BlockIQ3_XXS { uint16_t d; uint8_t qs[96]; };
struct BlockIQ3_S { uint16_t d; uint8_t qs[64]; uint8_t qh[8]; uint8_t signs[32]; uint8_t scales[4]; };
struct BlockIQ1_S { uint16_t d; uint8_t qs[32]; uint16_t qh[8]; };
struct BlockIQ1_M { uint8_t qs[32]; uint8_t qh[16]; uint8_t scales[8]; };
static_assert(sizeof(BlockIQ2_XXS) == 66 && sizeof(BlockIQ2_XS) == 74 && sizeof(BlockIQ2_S) == 82 &&
              sizeof(BlockIQ3_XXS) == 98 && sizeof(BlockIQ3_S) == 110 && sizeof(BlockIQ1_S) == 50 &&
              sizeof(BlockIQ1_M) == 56);

// IQ1_S's and IQ1_M's shift of every grid value (ggml's IQ1S_DELTA = IQ1M_DELTA): ±1/8 per 32 (IQ1_M: 8) values.
inline constexpr float kIq1Delta = 0.125f;

// IQ4_NL's and IQ4_XS's 16 levels (ggml's kvalues_iq4nl): denser near zero, where most weights are.
inline constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Bytes of one block of a llama.cpp Q type (not Q8_0, which dtype.h knows); 0 otherwise.
size_t block_bytes(DType t);

// Reference dequantization of `blocks` consecutive blocks of type t into
// dst[blocks · block size], exactly llama.cpp's dequantize_row_* in float.
void dequantize(DType t, const void* src, float* dst, size_t blocks);

// The i-quants above (quant_iq.cpp): `blocks` super-blocks into dst[256 · blocks], exactly ggml's
// dequantize_row_iq2_xxs .. iq1_m in float. Called by dequantize().
void dequantize_iq(DType t, const void* src, float* dst, size_t blocks);

// Q4_K / Q5_K: sub-block j (0..7) of the 12 packed bytes → 6-bit scale and min.
void k4_scale_min(int j, const uint8_t* scales, uint8_t& scale, uint8_t& min);

// Q3_K: the 12 packed bytes → 16 signed sub-block scales (6-bit value − 32).
void q3_k_scales(const uint8_t* packed, int8_t out[16]);

// IQ4_XS: sub-block ib's (0..7) scale, the 6-bit code − 32.
int iq4_xs_scale(const BlockIQ4_XS& b, int ib);

// Reference quantizers (llama.cpp's quantize_row_*_ref): `count` floats
// (count % 32 == 0) into count / 32 blocks.
void quantize_q4_0(const float* src, uint8_t* dst, size_t count);
void quantize_q4_1(const float* src, uint8_t* dst, size_t count);
void quantize_q5_0(const float* src, uint8_t* dst, size_t count);
void quantize_q5_1(const float* src, uint8_t* dst, size_t count);

// Q4_K, Q5_K and Q6_K (count % 256 == 0) as llama.cpp's reference quantizers compute them (what
// llama-quantize writes without an importance matrix; quantize.cpp): Q4_K and Q5_K fit each
// 32-value sub-block's scale and min by a weighted least-squares search over 21 (Q5_K 16) candidate
// scales, Q6_K each 16-value sub-block's scale over 19; the scales are then quantized against the
// super-block's largest (6 bits; Q6_K 8 bits, signed). Q4_K and Q6_K are byte for byte
// llama-quantize's output (tests/test_quantize_llamacpp.cpp); Q5_K shares Q4_K's code with its own
// constants, and no llama-quantize file of it is at hand to compare.
void quantize_q4_k(const float* src, uint8_t* dst, size_t count);
void quantize_q5_k(const float* src, uint8_t* dst, size_t count);
// Q2_K and Q3_K likewise (quantize_row_q2_K_ref, q3_K_ref): Q2_K fits each 16-value sub-block's
// scale and min by the weighted mean absolute error over 16 candidate scales, four-bit codes against
// the largest; Q3_K each sub-block's scale by make_q3_quants' level-by-level refinement, six-bit
// signed codes. Not compared with a llama-quantize file (none is at hand).
void quantize_q2_k(const float* src, uint8_t* dst, size_t count);
void quantize_q3_k(const float* src, uint8_t* dst, size_t count);
void quantize_q6_k(const float* src, uint8_t* dst, size_t count);
// IQ4_NL (count % 32 == 0) and IQ4_XS (count % 256 == 0) as llama-quantize writes them without an
// importance matrix (ggml's quantize_iq4_nl / quantize_iq4_xs, quantize_row_iq4_nl_impl): each
// 32-value block's scale by a least-squares search over 15 candidate scales, weights x², levels the
// nearest of kIq4Values; IQ4_XS then codes the eight sub-block scales in six bits against the
// largest and takes the levels again at the stored scales. (llama.cpp's quantize_row_iq4_nl_ref
// skips the search; llama-quantize does not run it.)
void quantize_iq4_nl(const float* src, uint8_t* dst, size_t count);
void quantize_iq4_xs(const float* src, uint8_t* dst, size_t count);

}  // namespace podkv::quant
