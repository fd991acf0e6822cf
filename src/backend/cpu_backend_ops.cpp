#include "backend/cpu_backend_ops.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "ops/elementwise.h"
#include "ops/kv_write.h"
#include "util/dtype.h"
#include "util/error.h"

namespace podkv {

void* CpuBackendOps::alloc(size_t bytes) {
  // 64-byte aligned (one cache line, one AVX-512 vector); aligned_alloc wants a multiple of it.
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) throw Error("cpu backend: cannot allocate " + std::to_string(bytes) + " bytes");
  return p;
}

void CpuBackendOps::free(void* ptr) { std::free(ptr); }

void CpuBackendOps::upload(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes > 0) std::memcpy(device_dst, host_src, bytes);
}

void CpuBackendOps::download(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes > 0) std::memcpy(host_dst, device_src, bytes);
}

std::unique_ptr<KvPool> CpuBackendOps::create_kv_pool(KvCache& cache) {
  auto pool = std::make_unique<HostKvPool>(cache.num_pages(), cache.page_bytes(), cache.entry_bytes());
  cache.attach_pool(pool.get());
  return pool;
}

void CpuBackendOps::embedding(const WeightMatrix& table, const int32_t* tokens, int64_t rows, float* out) {
  const auto* base = static_cast<const uint8_t*>(table.data);
  for (int64_t r = 0; r < rows; ++r) {
    check(tokens[r] >= 0 && tokens[r] < table.rows,
          "embedding: token " + std::to_string(tokens[r]) + " outside the table of " + std::to_string(table.rows));
    to_f32(table.dtype, base + tokens[r] * table.row_bytes(), out + r * table.cols, static_cast<size_t>(table.cols));
  }
}

void CpuBackendOps::rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, double eps, float* out) {
  podkv::rms_norm(x, weight, rows, n, eps, out);
}

void CpuBackendOps::rope(float* x, int64_t rows, int heads, int dim, const int64_t* positions, const float* inv_freq,
                         bool interleaved) {
  // The CPU kernel keeps cos/sin tables of 1024 entries per token.
  check(dim % 2 == 0 && dim <= 2048, "rope: head_dim " + std::to_string(dim) + " must be even and at most 2048");
  apply_rope(x, rows, heads, dim, positions, inv_freq, interleaved);
}

void CpuBackendOps::silu_mul(float* gate, const float* up, int64_t n) { podkv::silu_mul(gate, up, n); }

void CpuBackendOps::matmul(const WeightMatrix& w, const float* x, int64_t rows, float* y, const float* bias) {
  if (rows > 0) podkv::matmul(w, x, rows, y, bias);
}

void CpuBackendOps::add(float* x, const float* y, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void CpuBackendOps::gather_rows(const float* x, int64_t width, const int64_t* rows, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) std::copy_n(x + rows[i] * width, width, out + i * width);
}

void CpuBackendOps::set_step(const KvView& view, const AttentionBatch& batch) {
  check(view.num_seqs == batch.num_seqs, "set_step: the view has " + std::to_string(view.num_seqs) +
                                             " batch entries, the batch " + std::to_string(batch.num_seqs));
  view_ = view;
  batch_ = batch;
  has_step_ = true;
}

void CpuBackendOps::kv_write(int layer, const float* k, const float* v) {
  check(has_step_, "kv_write: no step (call set_step first)");
  podkv::kv_write(view_, layer, batch_.num_seqs, batch_.row_begin, batch_.first_pos, k, v);
}

void CpuBackendOps::attention(const AttentionParams& params, const float* q, const AttentionOutputs& outputs) {
  check(has_step_, "attention: no step (call set_step first)");
  podkv::attention(view_, batch_, params, q, outputs);
}

}  // namespace podkv
