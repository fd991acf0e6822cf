// The op-level backend interface: device memory and the ops one forward pass
// is made of, so that every backend can be tested op by op against a plain
// reference (tools/test_backend_ops) before its forward is trusted. The CPU
// implementation (cpu_backend_ops.h) calls the CPU ops of src/ops; a CUDA one
// (next issue) implements the same calls with kernels.
//
// Memory rule: every tensor an op takes (weights, activations, token ids,
// positions, row lists, the KV pool, attention outputs) is device memory from
// alloc() (host memory for the CPU). The per-step descriptors (the KvView's
// page tables and rules, the AttentionBatch's arrays) are host memory handed
// over once per step with set_step(); a device backend mirrors them there.
// Shapes are row-major; "rows" are the step's tokens, all batch entries together.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kv/kv_cache.h"
#include "kv/kv_pool.h"
#include "kv/kv_view.h"
#include "ops/attention.h"
#include "ops/matmul.h"
#include "util/error.h"

namespace podkv {

class BackendOps {
 public:
  virtual ~BackendOps() = default;
  virtual std::string name() const = 0;

  // Device memory. alloc throws Error when the memory is not there; free(nullptr) is a no-op.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* ptr) = 0;
  virtual void upload(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* device_src, size_t bytes) = 0;
  // Waits until every op queued so far has finished (ops may run asynchronously).
  virtual void synchronize() = 0;
  // The pages of `cache` in this backend's memory, attached to it (cache.attach_pool).
  virtual std::unique_ptr<KvPool> create_kv_pool(KvCache& cache) = 0;

  // out[r, :] = table[tokens[r], :] widened to float32; table [vocab, hidden] in
  // any stored dtype (Q8_0: hidden % 32 == 0), out [rows, hidden].
  virtual void embedding(const WeightMatrix& table, const int32_t* tokens, int64_t rows, float* out) = 0;
  // out[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * weight; x, out [rows, n], weight [n].
  virtual void rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, double eps, float* out) = 0;
  // Rotates every head of x [rows, heads * dim] in place by the angle
  // float32(positions[r]) * inv_freq[i] (inv_freq [dim / 2]); pairs (i, i + dim/2),
  // or (2i, 2i + 1) when interleaved (ops/elementwise.h).
  virtual void rope(float* x, int64_t rows, int heads, int dim, const int64_t* positions, const float* inv_freq,
                    bool interleaved) = 0;
  // gate[i] = silu(gate[i]) * up[i], i < n.
  virtual void silu_mul(float* gate, const float* up, int64_t n) = 0;
  // y[rows, w.rows] = x[rows, w.cols] · Wᵀ (+ bias[w.rows] when not null); w.data
  // is device memory in the stored dtype.
  virtual void matmul(const WeightMatrix& w, const float* x, int64_t rows, float* y, const float* bias) = 0;
  // The residual: x[i] += y[i], i < n.
  virtual void add(float* x, const float* y, int64_t n) = 0;
  // out[i, :] = x[rows[i], :] for i < count; x [*, width], out [count, width]
  // (the rows that want logits).
  virtual void gather_rows(const float* x, int64_t width, const int64_t* rows, int64_t count, float* out) = 0;

  // The step's KV view (its pool is this backend's, from create_kv_pool) and
  // the batch's rows and positions; both stay valid (host memory) until the
  // step's last kv_write / attention.
  virtual void set_step(const KvView& view, const AttentionBatch& batch) = 0;
  // Writes `layer`'s new keys and values k, v [rows, H_kv * d] at the batch's
  // positions, encoded in the pool's entry type (ops/kv_write.h).
  virtual void kv_write(int layer, const float* k, const float* v) = 0;
  // Attention of params.layer for q [rows, H * d] (ops/attention.h). outputs.out,
  // .gates and .scores are device memory; outputs.stats is host memory, added to
  // by the time the call returns.
  virtual void attention(const AttentionParams& params, const float* q, const AttentionOutputs& outputs) = 0;
};

// Names of the backends compiled in, the CPU first ("cpu"; "cuda" joins under PODKV_HAVE_CUDA).
std::vector<std::string> backend_ops_names();
// The backend called `name`; throws Error naming the known ones otherwise.
std::unique_ptr<BackendOps> make_backend_ops(const std::string& name);

// Device memory of one backend, freed with it.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(BackendOps& ops, size_t bytes) : ops_(&ops), bytes_(bytes), data_(bytes ? ops.alloc(bytes) : nullptr) {}
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ops_ = o.ops_;
      bytes_ = o.bytes_;
      data_ = o.data_;
      o.data_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  ~DeviceBuffer() { reset(); }

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }
  void upload(const void* host, size_t bytes) {
    check(bytes <= bytes_, "device buffer: upload of " + std::to_string(bytes) + " bytes into " + std::to_string(bytes_));
    ops_->upload(data_, host, bytes);
  }
  void download(void* host, size_t bytes) const {
    check(bytes <= bytes_, "device buffer: download of " + std::to_string(bytes) + " bytes from " + std::to_string(bytes_));
    ops_->download(host, data_, bytes);
  }

 private:
  void reset() {
    if (data_ != nullptr) ops_->free(data_);
    data_ = nullptr;
  }
  BackendOps* ops_ = nullptr;
  size_t bytes_ = 0;
  void* data_ = nullptr;
};

}  // namespace podkv
