#include "backend/cuda_backend_ops.h"

#if defined(PODKV_HAVE_CUDA)

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#include "backend/cuda_backend_state.h"
#include "cuda/cuda_check.h"
#include "cuda/gemm_lt.h"
#include "cuda/kernels.h"

namespace podkv {

bool cuda_device_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

namespace {

using cuda::device_alloc;

// The pages of a KV cache in device memory.
class DeviceKvPool : public KvPool {
 public:
  DeviceKvPool(cudaStream_t stream, size_t pages, size_t page_bytes, size_t entry_bytes)
      : stream_(stream), page_bytes_(page_bytes), entry_bytes_(entry_bytes) {
    data_ = static_cast<uint8_t*>(device_alloc(pages * page_bytes, "the KV pool"));
  }
  ~DeviceKvPool() override {
    cudaFree(data_);
    cudaFree(copies_);
  }
  void copy_entries(const EntryCopy* copies, size_t count) override {
    if (count == 0) return;
    if (count > capacity_) {
      PODKV_CUDA_CHECK(cudaStreamSynchronize(stream_));
      cudaFree(copies_);
      copies_ = nullptr;
      capacity_ = std::max(count, 2 * capacity_);
      copies_ = static_cast<EntryCopy*>(device_alloc(capacity_ * sizeof(EntryCopy), "KV entry copies"));
    }
    PODKV_CUDA_CHECK(cudaMemcpyAsync(copies_, copies, count * sizeof(EntryCopy), cudaMemcpyHostToDevice, stream_));
    cuda::copy_entries(data_, static_cast<int64_t>(page_bytes_), static_cast<int64_t>(entry_bytes_), copies_,
                       static_cast<int64_t>(count), stream_);
  }
  uint8_t* base() override { return data_; }

 private:
  cudaStream_t stream_;
  size_t page_bytes_, entry_bytes_;
  uint8_t* data_ = nullptr;
  EntryCopy* copies_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace

CudaBackendOps::CudaBackendOps() : state_(std::make_unique<State>()) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0)
    throw Error(std::string("cuda backend: no CUDA device (") +
                (e != cudaSuccess ? cudaGetErrorString(e) : "the runtime sees none") + ")");
  PODKV_CUDA_CHECK(cudaSetDevice(0));
  cudaDeviceProp props{};
  PODKV_CUDA_CHECK(cudaGetDeviceProperties(&props, 0));
  state_->device_name = props.name;
  state_->num_sms = props.multiProcessorCount;
  PODKV_CUDA_CHECK(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking));
  PODKV_CUBLAS_CHECK(cublasCreate(&state_->cublas));
  PODKV_CUBLAS_CHECK(cublasSetStream(state_->cublas, state_->stream));
  // Default math: SGEMM stays plain float32 (TF32 only with CUBLAS_TF32_TENSOR_OP_MATH), bf16 GEMMs
  // run on the tensor cores with float32 accumulation.
  PODKV_CUBLAS_CHECK(cublasSetMathMode(state_->cublas, CUBLAS_DEFAULT_MATH));
  // A workspace of its own, so that cuBLAS allocates nothing while a step graph is captured.
  const size_t workspace = size_t{32} << 20;
  state_->cublas_workspace = device_alloc(workspace, "the cuBLAS workspace");
  PODKV_CUBLAS_CHECK(cublasSetWorkspace(state_->cublas, state_->cublas_workspace, workspace));
  // The bf16 GEMMs through cuBLASLt, the algorithm of 1024+ rows timed once per power-of-two bucket
  // (cuda/gemm_lt.h). PODKV_CUDA_GEMM_TUNE: 0 = cublasGemmEx (its own heuristic's pick, as before),
  // first = cuBLASLt's first candidate untimed, anything else or unset = timed.
  const char* tune = std::getenv("PODKV_CUDA_GEMM_TUNE");
  if (tune == nullptr || std::string(tune) != "0")
    state_->gemm_lt = std::make_unique<cuda::GemmLt>(state_->stream, state_->cublas_workspace, workspace,
                                                     tune == nullptr || std::string(tune) != "first");
  state_->counter = static_cast<unsigned long long*>(device_alloc(sizeof(unsigned long long), "a counter"));
  state_->norm_counter = static_cast<unsigned*>(device_alloc(sizeof(unsigned), "a counter"));
  PODKV_CUDA_CHECK(cudaMemset(state_->norm_counter, 0, sizeof(unsigned)));
  const size_t barrier_bytes = cuda::kDecodeChainBarrierWords * sizeof(unsigned);
  state_->chain_barrier = static_cast<unsigned*>(device_alloc(barrier_bytes, "a grid barrier"));
  PODKV_CUDA_CHECK(cudaMemsetAsync(state_->chain_barrier, 0, barrier_bytes, state_->stream));
  PODKV_CUDA_CHECK(cudaStreamSynchronize(state_->stream));
  // SwiGLU inside the one-row gate | up GEMV is on by default (H200, 2026-12-03: batch-1 decode at 4K
  // 170.7-172.1 tok/s against 167.8-169.4 without it, interleaved in one run; exact); the residual
  // norm fusion is off (162.8-163.3: slower). The chain is on (see set_decode_fusions).
  set_decode_fusions(true, false, true);
  if (const char* fuse = std::getenv("PODKV_CUDA_DECODE_FUSE"); fuse != nullptr) {
    const std::string names = std::string(",") + fuse + ",";
    set_decode_fusions(names.find(",swiglu,") != std::string::npos, names.find(",norm,") != std::string::npos,
                       names.find(",chain,") != std::string::npos, names.find(",rope,") != std::string::npos);
  }
  if (const char* fuse = std::getenv("PODKV_CUDA_QK_NORM_FUSE"); fuse != nullptr)
    set_qk_norm_fusion(std::string(fuse) != "0");
  if (const char* fuse = std::getenv("PODKV_CUDA_PREFILL_FUSE"); fuse != nullptr)
    set_prompt_bf16_path(std::string(fuse) != "0");
  if (const char* stage = std::getenv("PODKV_CUDA_PREFILL_STAGE_ATTENTION"); stage != nullptr)
    set_attention_staging(std::string(stage) != "0");
  if (const char* q_bf16 = std::getenv("PODKV_CUDA_PREFILL_Q_BF16"); q_bf16 != nullptr)
    set_prompt_q_bf16(std::string(q_bf16) != "0");
  if (const char* qkv_bf16 = std::getenv("PODKV_CUDA_PREFILL_QKV_BF16"); qkv_bf16 != nullptr)
    set_prompt_qkv_bf16(std::string(qkv_bf16) == "1");
}

void CudaBackendOps::set_prompt_bf16_path(bool on) { state_->prompt_bf16 = on; }

bool CudaBackendOps::qk_norm_fusion() const { return state_->fuse_qk_norm; }

void CudaBackendOps::set_qk_norm_fusion(bool on) { state_->fuse_qk_norm = on; }

void CudaBackendOps::set_decode_fusions(bool swiglu, bool norm, bool chain, bool rope) {
  state_->fuse_swiglu = swiglu;
  state_->fuse_norm = norm;
  state_->fuse_chain = chain;
  state_->fuse_rope = rope;
}

CudaBackendOps::~CudaBackendOps() {
  if (state_->stream != nullptr) cudaStreamSynchronize(state_->stream);
  for (State::Region& r : state_->regions) {
    cudaEventDestroy(r.start);
    if (r.stop != nullptr) cudaEventDestroy(r.stop);
  }
  cudaFree(state_->step_buffer);
  cudaFree(state_->tables_buffer);
  cudaFree(state_->split);
  cudaFree(state_->counter);
  cudaFree(state_->norm_counter);
  cudaFree(state_->chain_barrier);
  cudaFree(state_->partials);
  cudaFree(state_->gemv_scratch);
  for (State::Graph& g : state_->graphs) cudaGraphExecDestroy(g.exec);
  state_->gemm_lt.reset();
  if (state_->cublas != nullptr) cublasDestroy(state_->cublas);
  cudaFree(state_->cublas_workspace);
  if (state_->stream != nullptr) cudaStreamDestroy(state_->stream);
}

void* CudaBackendOps::alloc(size_t bytes) { return device_alloc(bytes, "a device buffer"); }

float* CudaBackendOps::grow(float*& buffer, size_t& capacity, size_t floats, const char* what) {
  if (floats > capacity) {
    synchronize();  // kernels may still read the old buffer
    cudaFree(buffer);
    buffer = nullptr;
    capacity = std::max(floats, 2 * capacity);
    buffer = static_cast<float*>(device_alloc(capacity * sizeof(float), what));
  }
  return buffer;
}

void CudaBackendOps::free(void* ptr) {
  if (ptr != nullptr) PODKV_CUDA_CHECK(cudaFree(ptr));
}

void CudaBackendOps::upload(void* device_dst, const void* host_src, size_t bytes) {
  // From pageable memory this returns once the bytes are staged: the host buffer may be reused.
  if (bytes > 0)
    PODKV_CUDA_CHECK(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, state_->stream));
}

void CudaBackendOps::download(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return;
  PODKV_CUDA_CHECK(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, state_->stream));
  PODKV_CUDA_CHECK(cudaStreamSynchronize(state_->stream));
}

void* CudaBackendOps::stream() const { return state_->stream; }

void CudaBackendOps::synchronize() { PODKV_CUDA_CHECK(cudaStreamSynchronize(state_->stream)); }

void CudaBackendOps::fill_zero(void* device_ptr, size_t bytes) {
  if (bytes > 0) PODKV_CUDA_CHECK(cudaMemsetAsync(device_ptr, 0, bytes, state_->stream));
}

void CudaBackendOps::fill_random_bf16(void* device_ptr, int64_t n, uint64_t seed, float bound) {
  cuda::fill_random_bf16(static_cast<uint16_t*>(device_ptr), n, seed, bound, state_->stream);
}

void CudaBackendOps::memory_info(size_t& free_bytes, size_t& total_bytes) const {
  PODKV_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
}

std::string CudaBackendOps::device_name() const { return state_->device_name; }

void CudaBackendOps::set_profiling(bool on) {
  profile();  // drops what was recorded
  state_->totals.clear();
  state_->profiling = on;
}

void CudaBackendOps::profile_begin(const char* name) {
  if (!state_->profiling) return;
  State::Region r;
  r.name = name;
  PODKV_CUDA_CHECK(cudaEventCreate(&r.start));
  PODKV_CUDA_CHECK(cudaEventRecord(r.start, state_->stream));
  state_->regions.push_back(r);
}

void CudaBackendOps::profile_end() {
  if (!state_->profiling) return;
  for (auto it = state_->regions.rbegin(); it != state_->regions.rend(); ++it) {
    if (it->stop != nullptr) continue;  // the innermost open region
    PODKV_CUDA_CHECK(cudaEventCreate(&it->stop));
    PODKV_CUDA_CHECK(cudaEventRecord(it->stop, state_->stream));
    return;
  }
}

std::vector<std::pair<std::string, double>> CudaBackendOps::profile() {
  synchronize();
  for (State::Region& r : state_->regions) {
    float ms = 0;
    if (r.stop != nullptr) {
      PODKV_CUDA_CHECK(cudaEventElapsedTime(&ms, r.start, r.stop));
      cudaEventDestroy(r.stop);
    }
    cudaEventDestroy(r.start);
    auto it = std::find_if(state_->totals.begin(), state_->totals.end(), [&](const auto& t) { return t.first == r.name; });
    if (it == state_->totals.end()) state_->totals.emplace_back(r.name, ms);
    else it->second += ms;
  }
  state_->regions.clear();
  return state_->totals;
}

namespace {

// Best time in seconds of `run` over `repetitions` (after one warm-up), timed by events on `stream`.
template <typename F>
double best_seconds(cudaStream_t stream, int repetitions, F run) {
  cudaEvent_t start, stop;
  PODKV_CUDA_CHECK(cudaEventCreate(&start));
  PODKV_CUDA_CHECK(cudaEventCreate(&stop));
  double best = 1e30;
  for (int r = 0; r <= repetitions; ++r) {
    PODKV_CUDA_CHECK(cudaEventRecord(start, stream));
    run();
    PODKV_CUDA_CHECK(cudaEventRecord(stop, stream));
    PODKV_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    PODKV_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (r > 0) best = std::min(best, ms / 1e3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

}  // namespace

double CudaBackendOps::measure_copy_gbs(size_t bytes, int repetitions) {
  DeviceBuffer a(*this, bytes), b(*this, bytes);
  fill_zero(a.data(), bytes);
  const double s = best_seconds(state_->stream, repetitions, [&] {
    PODKV_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, state_->stream));
  });
  return 2.0 * static_cast<double>(bytes) / s / 1e9;
}

double CudaBackendOps::measure_bf16_gemm_tflops(int n, int repetitions) {
  const size_t elems = static_cast<size_t>(n) * static_cast<size_t>(n);
  DeviceBuffer a(*this, elems * 2), b(*this, elems * 2), c(*this, elems * 4);
  fill_random_bf16(a.data(), static_cast<int64_t>(elems), 1, 1.0f);
  fill_random_bf16(b.data(), static_cast<int64_t>(elems), 2, 1.0f);
  const float one = 1.0f, zero = 0.0f;
  const double s = best_seconds(state_->stream, repetitions, [&] {
    PODKV_CUBLAS_CHECK(cublasGemmEx(state_->cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a.data(), CUDA_R_16BF, n,
                                    b.data(), CUDA_R_16BF, n, &zero, c.data(), CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
  });
  return 2.0 * n * static_cast<double>(n) * n / s / 1e12;
}

std::unique_ptr<KvPool> CudaBackendOps::create_kv_pool(KvCache& cache) {
  auto pool = std::make_unique<DeviceKvPool>(state_->stream, cache.num_pages(), cache.page_bytes(), cache.entry_bytes());
  cache.attach_pool(pool.get());
  return pool;
}

void CudaBackendOps::embedding(const WeightMatrix& table, const int32_t* tokens, int64_t rows, float* out) {
  check(table.dtype == DType::F32 || table.dtype == DType::F16 || table.dtype == DType::BF16 ||
            table.dtype == DType::Q8_0,
        std::string("cuda embedding: tables of type ") + dtype_name(table.dtype) + " are not supported on the device");
  cuda::embedding(table.dtype, table.data, table.rows, table.cols, tokens, rows, out, state_->stream);
}

void CudaBackendOps::rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, double eps, float* out) {
  cuda::rms_norm(x, weight, rows, n, eps, out, state_->stream);
}

void CudaBackendOps::head_rms_norm(float* qkv, int64_t rows, int heads, int kv_heads, int dim, const float* q_norm,
                                   const float* k_norm, double eps) {
  cuda::head_rms_norm(qkv, rows, static_cast<int64_t>(heads + 2 * kv_heads) * dim, heads, kv_heads, dim, q_norm, k_norm,
                      eps, state_->stream);
}

void CudaBackendOps::rope(float* x, int64_t rows, int heads, int dim, const int64_t* positions, const float* inv_freq,
                          bool interleaved) {
  check(dim % 2 == 0, "rope: head_dim " + std::to_string(dim) + " must be even");
  cuda::rope(x, rows, heads, dim, positions, inv_freq, interleaved, state_->stream);
}

void CudaBackendOps::silu_mul(float* gate, const float* up, int64_t n) { cuda::silu_mul(gate, up, n, state_->stream); }

void CudaBackendOps::add_rms_norm(float* x, const float* residual, const float* weight, int64_t rows, int64_t n,
                                  double eps, float* out) {
  cuda::add_rms_norm(x, residual, weight, rows, n, eps, out, state_->stream);
}

void CudaBackendOps::silu_mul_rows(const float* gu, int64_t rows, int64_t inter, float* out) {
  cuda::silu_mul_rows(gu, rows, inter, out, state_->stream);
}

void CudaBackendOps::matmul_add_rms_norm(const WeightMatrix& w, const float* a, int64_t rows, float* proj, float* x,
                                         const float* weight, double eps, float* xn) {
  float* norm_out = weight != nullptr ? xn : nullptr;
  if (rows == 1 && state_->fuse_norm &&
      cuda::gemv_residual_norm_row(w.dtype, w.data, w.rows, w.cols, a, x, weight, eps, norm_out, state_->norm_counter,
                                   state_->num_sms, state_->stream))
    return;
  matmul(w, a, rows, proj, nullptr);
  if (weight != nullptr) add_rms_norm(x, proj, weight, rows, w.rows, eps, xn);
  else add(x, proj, rows * w.rows);
}

void CudaBackendOps::matmul_swiglu(const WeightMatrix& w, const float* x, int64_t rows, float* gu, float* out) {
  check(w.rows % 2 == 0, "matmul_swiglu: " + std::to_string(w.rows) + " rows, not gate | up of equal size");
  if (rows == 1 && state_->fuse_swiglu &&
      cuda::gemv_swiglu_row(w.dtype, w.data, w.rows, w.cols, x, out, state_->num_sms, state_->stream))
    return;
  matmul(w, x, rows, gu, nullptr);
  silu_mul_rows(gu, rows, w.rows / 2, out);
}

bool CudaBackendOps::decode_chain(const WeightMatrix& wo, const WeightMatrix& w_gate_up, const WeightMatrix& w_down,
                                  const float* mlp_norm, const NextProjection& next, double eps, int64_t rows,
                                  const float* attn, float* x, float* h, float* qkv) {
  if (rows != 1 || !state_->fuse_chain) return false;
  for (const WeightMatrix* w : {&wo, &w_gate_up, &w_down, next.wqkv})
    if (w != nullptr && w->dtype != DType::BF16) return false;
  check(w_gate_up.rows % 2 == 0 && w_gate_up.cols == wo.rows && w_down.rows == wo.rows &&
            w_down.cols == w_gate_up.rows / 2 && (next.wqkv == nullptr || next.wqkv->cols == wo.rows),
        "decode_chain: the layer's matrices do not chain (o " + std::to_string(wo.rows) + "x" +
            std::to_string(wo.cols) + ", gate | up " + std::to_string(w_gate_up.rows) + "x" +
            std::to_string(w_gate_up.cols) + ", down " + std::to_string(w_down.rows) + "x" +
            std::to_string(w_down.cols) + ")");
  cuda::DecodeChain args;
  args.wo = static_cast<const uint16_t*>(wo.data);
  args.w_gate_up = static_cast<const uint16_t*>(w_gate_up.data);
  args.w_down = static_cast<const uint16_t*>(w_down.data);
  args.mlp_norm = mlp_norm;
  if (next.wqkv != nullptr) {
    args.wqkv = static_cast<const uint16_t*>(next.wqkv->data);
    args.bqkv = next.bias;
    args.next_norm = next.norm;
    args.qkv_out = next.wqkv->rows;
  }
  args.hidden = wo.rows, args.q_dim = wo.cols, args.inter = w_down.cols;
  args.eps = eps;
  args.attn = attn, args.x = x, args.h = h, args.qkv = qkv;
  args.barrier = state_->chain_barrier;
  cuda::ChainRope rope;
  if (next.wqkv != nullptr && next.rope != nullptr && state_->fuse_rope && has_step_) {
    const NextRope& r = *next.rope;
    rope.step = state_->step;
    rope.layer = r.layer, rope.heads = r.heads, rope.positions = r.positions, rope.inv_freq = r.inv_freq;
    rope.interleaved = r.interleaved, rope.q = r.q, rope.k = r.k, rope.v = r.v;
    args.rope = &rope;
  }
  // Where the kernel with the RoPE stage cannot run (a step it does not take: kernels.h's DecodeChain;
  // its occupancy; a launch of it that failed before), the plain chain still can.
  if (args.rope != nullptr && !cuda::decode_chain_applies(args, state_->num_sms)) args.rope = nullptr;
  if (!cuda::decode_chain_applies(args, state_->num_sms)) return false;
  ProfileScope p(*this, args.rope != nullptr ? "decode chain (o, gate | up, down, next q, k, v, rope, kv write)"
                                             : "decode chain (o, gate | up, down, next q, k, v)");
  if (!cuda::decode_chain(args, state_->num_sms, state_->stream)) {
    if (args.rope == nullptr) return false;
    args.rope = nullptr;
    if (!cuda::decode_chain(args, state_->num_sms, state_->stream)) return false;
  }
  ++state_->chain_launches;
  if (args.rope != nullptr) {
    next.rope->done = true;
    ++state_->chain_rope_launches;
  }
  return true;
}

int64_t CudaBackendOps::decode_chain_launches() const { return state_->chain_launches; }
int64_t CudaBackendOps::decode_chain_rope_launches() const { return state_->chain_rope_launches; }

void CudaBackendOps::split_qkv_rope(const float* qkv, int64_t rows, int heads, int kv_heads, int dim,
                                    const int64_t* positions, const float* inv_freq, bool interleaved, float* q, float* k,
                                    float* v) {
  check(dim % 2 == 0, "rope: head_dim " + std::to_string(dim) + " must be even");
  cuda::split_qkv_rope(qkv, rows, heads, kv_heads, dim, positions, inv_freq, interleaved, q, k, v, state_->stream);
}

void CudaBackendOps::add(float* x, const float* y, int64_t n) { cuda::add(x, y, n, state_->stream); }

void CudaBackendOps::gather_rows(const float* x, int64_t width, const int64_t* rows, int64_t count, float* out) {
  cuda::gather_rows(x, width, rows, count, out, state_->stream);
}

void CudaBackendOps::matmul(const WeightMatrix& w, const float* x, int64_t rows, float* y, const float* bias) {
  if (rows == 0) return;
  cudaStream_t stream = state_->stream;
  const int m = static_cast<int>(w.rows), k = static_cast<int>(w.cols), n = static_cast<int>(rows);
  // Row-major y[rows, out] = x[rows, in] · Wᵀ is column-major yᵀ[out, rows] = W[in, out]ᵀ · xᵀ[in, rows].
  if (rows > cuda::kGemvMaxRows && w.dtype == DType::F32) {
    const float one = 1.0f, zero = 0.0f;
    PODKV_CUBLAS_CHECK(cublasSgemm(state_->cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one,
                                   static_cast<const float*>(w.data), k, x, k, &zero, y, m));
  } else if (rows > cuda::kGemvMaxRows && w.dtype == DType::BF16) {
    // One tensor-core GEMM with the activations rounded to bf16 (as bf16 inference engines do:
    // about 2^-9 relative per element, float32 accumulation).
    stage_rows(x, rows, w.cols);
    gemm_bf16(w, state_->split, rows, y, CUDA_R_32F, 0.0f);
    state_->staged_rows = -1;  // matmul's own use of the scratch
  } else {
    // Decode rows, and the stored types cuBLAS does not take (F16 and Q8_0 here: CudaBackend uploads bf16 or f32).
    const size_t floats = cuda::gemv_scratch_floats(w.dtype, w.rows, w.cols, std::min(rows, cuda::kGemvMaxRows),
                                                    state_->num_sms);
    float* scratch = grow(state_->gemv_scratch, state_->gemv_capacity, floats, "matmul split sums");
    for (int64_t r = 0; r < rows; r += cuda::kGemvMaxRows) {
      const int64_t chunk = std::min<int64_t>(cuda::kGemvMaxRows, rows - r);
      cuda::gemv(w.dtype, w.data, w.rows, w.cols, x + r * w.cols, chunk, y + r * w.rows, bias, scratch,
                 state_->num_sms, stream);
    }
    return;
  }
  if (bias != nullptr) cuda::add_bias(y, bias, rows, w.rows, stream);
}

uint16_t* CudaBackendOps::bf16_scratch(int64_t elems) {
  const size_t need = static_cast<size_t>(elems);
  if (need > state_->split_capacity) {
    synchronize();  // a queued GEMM may still read the old buffer
    cudaFree(state_->split);
    state_->split = nullptr;
    state_->split_capacity = std::max(need, 2 * state_->split_capacity);
    state_->split = static_cast<uint16_t*>(device_alloc(state_->split_capacity * sizeof(uint16_t), "matmul scratch"));
  }
  return state_->split;
}

void CudaBackendOps::gemm_bf16(const WeightMatrix& w, const uint16_t* a, int64_t rows, void* y, int y_type,
                               float beta) {
  // Row-major y[rows, out] = a[rows, in] · Wᵀ as column-major yᵀ = W[in, out]ᵀ · aᵀ, float32 accumulation.
  const int m = static_cast<int>(w.rows), k = static_cast<int>(w.cols), n = static_cast<int>(rows);
  const float one = 1.0f;
  const cudaDataType_t type = static_cast<cudaDataType_t>(y_type);
  if (state_->gemm_lt != nullptr && state_->gemm_lt->run(w.data, a, m, n, k, y, type, beta)) return;
  PODKV_CUBLAS_CHECK(cublasGemmEx(state_->cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w.data, CUDA_R_16BF, k, a,
                                  CUDA_R_16BF, k, &beta, y, type, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

bool CudaBackendOps::prompt_bf16_path(int64_t rows) const { return state_->prompt_bf16 && rows > cuda::kGemvMaxRows; }

void CudaBackendOps::stage_rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, double eps) {
  cuda::rms_norm_bf16(x, weight, rows, n, eps, bf16_scratch(rows * n), state_->stream);
  state_->staged_rows = rows, state_->staged_cols = n;
}

void CudaBackendOps::stage_rows(const float* a, int64_t rows, int64_t cols) {
  cuda::split_bf16(a, rows * cols, bf16_scratch(rows * cols), nullptr, state_->stream);
  state_->staged_rows = rows, state_->staged_cols = cols;
}

void CudaBackendOps::stage_swiglu(const uint16_t* gu, int64_t rows, int64_t inter) {
  cuda::silu_mul_rows_bf16(gu, rows, inter, bf16_scratch(rows * inter), state_->stream);
  state_->staged_rows = rows, state_->staged_cols = inter;
}

void CudaBackendOps::check_staged(const WeightMatrix& w, int64_t rows, const char* what) const {
  check(w.dtype == DType::BF16, std::string(what) + ": the staged bf16 path takes BF16 weights, not " +
                                    dtype_name(w.dtype));
  check(state_->staged_rows == rows && state_->staged_cols == w.cols,
        std::string(what) + ": no staged input of " + std::to_string(rows) + " x " + std::to_string(w.cols) +
            " (staged: " + std::to_string(state_->staged_rows) + " x " + std::to_string(state_->staged_cols) + ")");
}

void CudaBackendOps::matmul_staged(const WeightMatrix& w, int64_t rows, float* y, const float* bias) {
  check_staged(w, rows, "matmul_staged");
  gemm_bf16(w, state_->split, rows, y, CUDA_R_32F, 0.0f);
  if (bias != nullptr) cuda::add_bias(y, bias, rows, w.rows, state_->stream);
}

void CudaBackendOps::matmul_staged_bf16(const WeightMatrix& w, int64_t rows, uint16_t* y) {
  check_staged(w, rows, "matmul_staged_bf16");
  gemm_bf16(w, state_->split, rows, y, CUDA_R_16BF, 0.0f);
}

void CudaBackendOps::matmul_staged_add(const WeightMatrix& w, int64_t rows, float* x) {
  check_staged(w, rows, "matmul_staged_add");
  gemm_bf16(w, state_->split, rows, x, CUDA_R_32F, 1.0f);
}

bool CudaBackendOps::profiling() const { return state_->profiling; }

void CudaBackendOps::begin_capture() {
  PODKV_CUDA_CHECK(cudaStreamBeginCapture(state_->stream, cudaStreamCaptureModeThreadLocal));
}

void CudaBackendOps::end_capture(const std::string& key) {
  cudaGraph_t graph = nullptr;
  PODKV_CUDA_CHECK(cudaStreamEndCapture(state_->stream, &graph));
  std::vector<State::Graph>& graphs = state_->graphs;
  cudaGraphExec_t exec = nullptr;
  if (graphs.size() >= kMaxGraphs) {
    // The least recently used one makes room; updated in place when the topology allows
    // (cheaper than a new instantiation), otherwise destroyed.
    exec = graphs.front().exec;
    graphs.erase(graphs.begin());
    cudaGraphExecUpdateResultInfo info{};
    if (cudaGraphExecUpdate(exec, graph, &info) != cudaSuccess) {
      cudaGetLastError();
      cudaGraphExecDestroy(exec);
      exec = nullptr;
    }
  }
  const cudaError_t made = exec != nullptr ? cudaSuccess : cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  PODKV_CUDA_CHECK(made);
  graphs.push_back(State::Graph{key, exec});
}

bool CudaBackendOps::has_graph(const std::string& key) const {
  return std::any_of(state_->graphs.begin(), state_->graphs.end(), [&](const State::Graph& g) { return g.key == key; });
}

void CudaBackendOps::abort_capture() {
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(state_->stream, &graph);
  if (graph != nullptr) cudaGraphDestroy(graph);
  cudaGetLastError();
}

void CudaBackendOps::run_graph(const std::string& key) {
  std::vector<State::Graph>& graphs = state_->graphs;
  const auto it = std::find_if(graphs.begin(), graphs.end(), [&](const State::Graph& g) { return g.key == key; });
  check(it != graphs.end(), "run_graph: no step graph was captured for this step's shape");
  std::rotate(it, it + 1, graphs.end());  // now the most recently used
  PODKV_CUDA_CHECK(cudaGraphLaunch(graphs.back().exec, state_->stream));
}

}  // namespace podkv

#else

namespace podkv {

bool cuda_device_available() { return false; }

}  // namespace podkv

#endif
