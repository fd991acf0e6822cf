// Linear layers on the CPU: y = x · Wᵀ with W stored row-major as [rows, cols]
// (the PyTorch nn.Linear layout) in its stored dtype (F32, F16, BF16, Q8_0 or
// one of llama.cpp's Q types, see util/quant.h).
//
// One token (decode) goes through a GEMV that streams W once in its stored dtype
// (no float32 copy), split over threads by rows: it is memory-bound, so its speed
// is bytes(W) / time against the machine's bandwidth. Several tokens (a decode
// batch or a prefill chunk) go through a GEMM that reads W once per call: with
// AVX-512, float weights use gemm_avx512.cpp (≤ 8 tokens straight from W, more
// through packed float32 panels); otherwise, and for Q8_0, panels of W are
// widened to float32 and multiplied with OpenBLAS sgemm.
#pragma once

#include <cstddef>
#include <cstdint>

#include "util/dtype.h"

namespace podkv {

// A weight matrix in place (usually inside a memory map). For the block types,
// cols is a multiple of the block size (32, or 256 for the K-quants) and each
// row is cols / block blocks.
struct WeightMatrix {
  DType dtype = DType::F32;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features
  const void* data = nullptr;

  size_t row_bytes() const { return dtype_bytes(dtype, static_cast<size_t>(cols)); }
  size_t bytes() const { return row_bytes() * static_cast<size_t>(rows); }
};

// y[tokens, rows] = x[tokens, cols] · Wᵀ (+ bias[rows] when bias != nullptr).
// tokens == 1 uses the GEMV; more use the GEMM path. Uses the OpenMP threads
// set by set_num_threads().
void matmul(const WeightMatrix& w, const float* x, int64_t tokens, float* y,
            const float* bias = nullptr);

// The single-token path, exposed for tests and benchmarks: y[rows] = W · x[cols].
void gemv(const WeightMatrix& w, const float* x, float* y);

// Plain reference: widens every element with to_f32 and sums in double. Tests only.
void matmul_reference(const WeightMatrix& w, const float* x, int64_t tokens, float* y,
                      const float* bias = nullptr);

// Threads used by matmul, attention and the other parallel ops (OpenMP and OpenBLAS).
void set_num_threads(int threads);
int num_threads();

// How the single-token GEMV takes dot products with Q4_0, Q8_0, Q2_K..Q6_K, IQ4_NL and IQ4_XS weights.
// Int8 (the default, what llama.cpp does): x is quantized once per call to
// blocks of 32 int8 with a float scale (round(x / d), d = max|x| / 127 over the
// block, so each x is off by at most 1/254 of its block's max|x|) and the block
// dot products are integer (AVX-512 VNNI); y then differs from the exact
// dequantized-W · x by at most Σ|w_j|·max|x|_block(j)/254 per row. Exact: x
// stays float32, y matches dequantized-W · x to float rounding (~1e-6).
// Without AVX-512 VNNI and VBMI, and for the other types and the GEMM, Int8 acts as Exact.
enum class QuantDot { Exact, Int8 };
void set_quant_dot(QuantDot mode);
QuantDot quant_dot();

// The vector instruction set the GEMV was compiled for: "avx512", "avx2" or "scalar".
const char* matmul_isa();

}  // namespace podkv
