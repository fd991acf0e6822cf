// Row lookups: the token embedding (widened from the stored type) and the
// gathering of the rows that want logits.
#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

// Both kernels: one block per row, each thread's kBatch loads issued before their stores. A loop of
// one load and one store per element waited for each load in turn (the stores may alias the
// source): the embedding of one 4,096-wide row took 8.5 us on an H200 (session 42's Nsight Compute
// durations), 16 round trips to memory a thread.
constexpr int kBatch = 8;

// o[k] = element k of a row of type T as float32, k < n (zeros where !valid).
template <DType T>
__device__ __forceinline__ void copy_row(const uint8_t* row, bool valid, int64_t n, float* o) {
  for (int64_t k0 = threadIdx.x; k0 < n; k0 += kBatch * blockDim.x) {
    float v[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int64_t k = k0 + j * blockDim.x;
      v[j] = valid && k < n ? weight_element(T, row, k) : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j)
      if (const int64_t k = k0 + j * blockDim.x; k < n) o[k] = v[j];
  }
}

__global__ void embedding_kernel(DType dtype, const uint8_t* table, size_t row_bytes, int64_t vocab, int64_t hidden,
                                 const int32_t* tokens, float* out) {
  const int64_t r = blockIdx.x;
  const int32_t token = tokens[r];
  float* o = out + r * hidden;
  const bool valid = token >= 0 && token < vocab;
  const uint8_t* row = table + static_cast<size_t>(valid ? token : 0) * row_bytes;
  // The type once, outside the loop (a switch per element kept its loads in separate branches).
  switch (dtype) {
    case DType::F32: copy_row<DType::F32>(row, valid, hidden, o); break;
    case DType::F16: copy_row<DType::F16>(row, valid, hidden, o); break;
    case DType::BF16: copy_row<DType::BF16>(row, valid, hidden, o); break;
    case DType::Q8_0: copy_row<DType::Q8_0>(row, valid, hidden, o); break;
    default: copy_row<DType::F32>(nullptr, false, hidden, o); break;  // weight_element's 0 for any other type
  }
}

__global__ void gather_rows_kernel(const float* x, int64_t width, const int64_t* rows, float* out) {
  const int64_t i = blockIdx.x;
  // A float32 row copied as the embedding copies a table row (its loads before its stores).
  copy_row<DType::F32>(reinterpret_cast<const uint8_t*>(x + rows[i] * width), true, width, out + i * width);
}

}  // namespace

void embedding(DType dtype, const void* table, int64_t vocab, int64_t hidden, const int32_t* tokens, int64_t rows,
               float* out, cudaStream_t stream) {
  if (rows == 0) return;
  embedding_kernel<<<static_cast<unsigned>(rows), 256, 0, stream>>>(
      dtype, static_cast<const uint8_t*>(table), dtype_bytes(dtype, static_cast<size_t>(hidden)), vocab, hidden, tokens,
      out);
  check_launch("embedding_kernel");
}

void gather_rows(const float* x, int64_t width, const int64_t* rows, int64_t count, float* out, cudaStream_t stream) {
  if (count == 0) return;
  gather_rows_kernel<<<static_cast<unsigned>(count), 256, 0, stream>>>(x, width, rows, out);
  check_launch("gather_rows_kernel");
}

}  // namespace podkv::cuda
