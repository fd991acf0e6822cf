// Row lookups: the token embedding (widened from the stored type) and the
// gathering of the rows that want logits.
#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

// One block per row.
__global__ void embedding_kernel(DType dtype, const uint8_t* table, size_t row_bytes, int64_t vocab, int64_t hidden,
                                 const int32_t* tokens, float* out) {
  const int64_t r = blockIdx.x;
  const int32_t token = tokens[r];
  float* o = out + r * hidden;
  const bool valid = token >= 0 && token < vocab;
  const uint8_t* row = table + static_cast<size_t>(valid ? token : 0) * row_bytes;
  for (int64_t k = threadIdx.x; k < hidden; k += blockDim.x) o[k] = valid ? weight_element(dtype, row, k) : 0.0f;
}

__global__ void gather_rows_kernel(const float* x, int64_t width, const int64_t* rows, float* out) {
  const int64_t i = blockIdx.x;
  const float* src = x + rows[i] * width;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) out[i * width + c] = src[c];
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
