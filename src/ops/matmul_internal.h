// Pieces shared by matmul.cpp, gemv.cpp and gemm.cpp; not part of the public API.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/matmul.h"

namespace podkv::detail {

// The GEMVs do matrices below this size on the calling thread: waking the OpenMP
// team costs a few microseconds, more than streaming 64 KiB.
constexpr size_t kParallelMinBytes = 64 * 1024;

// Throws Error unless `w` is a weight matrix these kernels can read: a float or
// Q8_0 dtype, data set, positive shape, and cols % 32 == 0 for Q8_0.
void check_weight(const WeightMatrix& w, const char* who);

// y[rows] = W · x[cols] (+ bias[rows]); the GEMV behind gemv() and matmul(tokens == 1).
void gemv_bias(const WeightMatrix& w, const float* x, float* y, const float* bias);

// The GEMV for llama.cpp's block types (Q4_0 ... Q6_K), reading the blocks in
// place (ops/quant_gemv.cpp); called by gemv_bias.
void gemv_quant(const WeightMatrix& w, const float* x, float* y, const float* bias);

// The Int8 GEMV (quant_dot() == Int8; Q4_0, Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS with AVX-512 VNNI
// and VBMI; ops/quant_gemv_int8.cpp): false, nothing done, when it does not apply.
bool gemv_quant_int8(const WeightMatrix& w, const float* x, float* y, const float* bias);

// y[tokens, rows] = x[tokens, cols] · Wᵀ (+ bias) through OpenBLAS sgemm.
void gemm(const WeightMatrix& w, const float* x, int64_t tokens, float* y, const float* bias);

#if defined(__AVX512F__)
#define PODKV_GEMM_AVX512 1
// y[tokens, rows] = x · Wᵀ (+ bias) for BF16, F16 and F32 weights with AVX-512
// (gemm_avx512.cpp); false (nothing done) for other dtypes.
bool gemm_avx512(const WeightMatrix& w, const float* x, int64_t tokens, float* y, const float* bias);
#else
#define PODKV_GEMM_AVX512 0
#endif

// Widens rows [row0, row0 + count) of W to float32 into dst[count, cols]
// (vectorised; exact, same values as to_f32). Runs on the calling thread.
void widen_rows(const WeightMatrix& w, int64_t row0, int64_t count, float* dst);

}  // namespace podkv::detail
