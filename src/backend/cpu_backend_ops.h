// BackendOps on the CPU: host memory, and each op one call of the CPU ops in
// src/ops (float32 activations, OpenMP threads from set_num_threads). It is
// what every other backend's ops are compared with end to end, and it is itself
// checked against the plain double-precision references of tools/test_backend_ops.
#pragma once

#include "backend/backend_ops.h"

namespace podkv {

class CpuBackendOps : public BackendOps {
 public:
  std::string name() const override { return "cpu"; }

  void* alloc(size_t bytes) override;
  void free(void* ptr) override;
  void upload(void* device_dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* device_src, size_t bytes) override;
  void synchronize() override {}
  std::unique_ptr<KvPool> create_kv_pool(KvCache& cache) override;

  void embedding(const WeightMatrix& table, const int32_t* tokens, int64_t rows, float* out) override;
  void rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, double eps, float* out) override;
  void rope(float* x, int64_t rows, int heads, int dim, const int64_t* positions, const float* inv_freq,
            bool interleaved) override;
  void silu_mul(float* gate, const float* up, int64_t n) override;
  void matmul(const WeightMatrix& w, const float* x, int64_t rows, float* y, const float* bias) override;
  void add(float* x, const float* y, int64_t n) override;
  void gather_rows(const float* x, int64_t width, const int64_t* rows, int64_t count, float* out) override;

  void set_step(const KvView& view, const AttentionBatch& batch) override;
  void kv_write(int layer, const float* k, const float* v) override;
  void attention(const AttentionParams& params, const float* q, const AttentionOutputs& outputs) override;

 private:
  // The step's descriptors, used in place (host memory).
  KvView view_;
  AttentionBatch batch_;
  bool has_step_ = false;
};

}  // namespace podkv
