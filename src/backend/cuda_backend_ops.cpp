#include "backend/cuda_backend_ops.h"

#if defined(PODKV_HAVE_CUDA)

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/gemm_lt.h"
#include "cuda/kernels.h"
#include "kv/token_classes.h"

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

// Appends arrays at 16-byte aligned offsets; device pointers are fixed up after the upload.
class Packer {
 public:
  template <typename T>
  size_t put(const T* src, size_t count) {
    const size_t at = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(at + count * sizeof(T));
    if (count > 0) std::memcpy(bytes_.data() + at, src, count * sizeof(T));
    return at;
  }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace

struct CudaBackendOps::State {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  std::string device_name;
  // The step's descriptors on the device.
  uint8_t* step_buffer = nullptr;
  size_t step_capacity = 0;
  // The page tables (page_indptr, then page_indices at a 16-byte boundary) apart from the rest: sent
  // only when the view's tables_generation changes (64 sequences of 8K tokens: 16.8 MB, where
  // most decode steps keep every table).
  uint8_t* tables_buffer = nullptr;
  size_t tables_capacity = 0;
  uint64_t tables_generation = 0;  // of the tables in tables_buffer (0: none)
  size_t tables_streams = 0;       // their streams
  Packer packer;
  std::vector<int32_t> row_entry;
  std::vector<uint8_t> entry_tiled;
  std::vector<int32_t> decode_rows;
  std::vector<int32_t> prefill_tiles;
  cuda::DeviceStep step;
  // Scratch: x in bf16 for cuBLAS (the bf16 prompt path's staged input: staged_rows x
  // staged_cols, or none when staged_rows < 0); the skipped-parts counter.
  uint16_t* split = nullptr;
  size_t split_capacity = 0;  // elements of each half
  int64_t staged_rows = -1, staged_cols = 0;
  unsigned long long* counter = nullptr;
  unsigned* norm_counter = nullptr;  // gemv_residual_norm_row's blocks done (zero between launches)
  unsigned* chain_barrier = nullptr;  // decode_chain's grid barrier (kDecodeChainBarrierWords), zeroed once
  bool fuse_swiglu = false, fuse_norm = false, fuse_chain = false;  // set_decode_fusions
  int64_t chain_launches = 0;                                        // decode_chain_launches
  bool prompt_bf16 = true;                       // PODKV_CUDA_PREFILL_FUSE=0 turns it off
  // Split-KV attention's partial results; the small-batch GEMV's split sums.
  float* partials = nullptr;
  size_t partial_capacity = 0;  // floats
  float* gemv_scratch = nullptr;
  size_t gemv_capacity = 0;
  int num_sms = 1;
  // Step graphs by step key, the most recently used last (at most kMaxGraphs).
  struct Graph {
    std::string key;
    cudaGraphExec_t exec = nullptr;
  };
  std::vector<Graph> graphs;
  void* cublas_workspace = nullptr;
  // The prompt path's bf16 GEMMs (gemm_bf16), null where PODKV_CUDA_GEMM_TUNE=0 (cublasGemmEx).
  std::unique_ptr<cuda::GemmLt> gemm_lt;
  int mma_warps_per_sm[5] = {};  // of the tensor-core decode kernel, by head_dim / 32 (0: not asked yet)
  // Profiling: events of the open and finished regions, and the sums per name.
  bool profiling = false;
  struct Region {
    std::string name;
    cudaEvent_t start = nullptr, stop = nullptr;
  };
  std::vector<Region> regions;
  std::vector<std::pair<std::string, double>> totals;
};

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
                       names.find(",chain,") != std::string::npos);
  }
  if (const char* fuse = std::getenv("PODKV_CUDA_PREFILL_FUSE"); fuse != nullptr)
    set_prompt_bf16_path(std::string(fuse) != "0");
}

void CudaBackendOps::set_prompt_bf16_path(bool on) { state_->prompt_bf16 = on; }

void CudaBackendOps::set_decode_fusions(bool swiglu, bool norm, bool chain) {
  state_->fuse_swiglu = swiglu;
  state_->fuse_norm = norm;
  state_->fuse_chain = chain;
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
  if (!cuda::decode_chain_applies(args, state_->num_sms)) return false;
  ProfileScope p(*this, "decode chain (o, gate | up, down, next q, k, v)");
  if (!cuda::decode_chain(args, state_->num_sms, state_->stream)) return false;
  ++state_->chain_launches;
  return true;
}

int64_t CudaBackendOps::decode_chain_launches() const { return state_->chain_launches; }

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

void CudaBackendOps::set_step(const KvView& view, const AttentionBatch& batch) {
  check(view.num_seqs == batch.num_seqs, "set_step: the view has " + std::to_string(view.num_seqs) +
                                             " batch entries, the batch " + std::to_string(batch.num_seqs));
  view_ = view;
  batch_ = batch;
  State& s = *state_;
  const int B = view.num_seqs, L = view.num_layers, H = view.num_kv_heads, G = view.num_groups;
  const size_t streams = static_cast<size_t>(B) * 4 * L * H;
  const int64_t rows = batch.row_begin[B];
  s.row_entry.resize(static_cast<size_t>(rows));
  for (int b = 0; b < B; ++b)
    for (int64_t r = batch.row_begin[b]; r < batch.row_begin[b + 1]; ++r) s.row_entry[r] = b;

  // Entries with a prompt chunk of at least 16 rows go to the tiled prefill kernel when it applies.
  s.entry_tiled.assign(static_cast<size_t>(B), 0);
  s.prefill_tiles.clear();
  if (cuda::prefill_attention_fits(view.head_dim, static_cast<int32_t>(view.dtype), G)) {
    const int tile = cuda::prefill_tile_rows();
    for (int b = 0; b < B; ++b) {
      const int64_t n = batch.row_begin[b + 1] - batch.row_begin[b];
      if (n < 16) continue;
      s.entry_tiled[b] = 1;
      for (int64_t r = 0; r < n; r += tile) {
        s.prefill_tiles.push_back(b);
        s.prefill_tiles.push_back(static_cast<int32_t>(r));
      }
    }
  }
  const int64_t num_tiles = static_cast<int64_t>(s.prefill_tiles.size() / 2);
  s.decode_rows.clear();
  if (num_tiles > 0)
    for (int b = 0; b < B; ++b)
      if (!s.entry_tiled[b])
        for (int64_t r = batch.row_begin[b]; r < batch.row_begin[b + 1]; ++r) s.decode_rows.push_back(static_cast<int32_t>(r));

  Packer& p = s.packer;
  p.bytes().clear();
  const size_t key_rules = p.put(view.key_rules, static_cast<size_t>(L) * H);
  const size_t value_rules = p.put(view.value_rules, static_cast<size_t>(L) * H);
  const size_t new_length = p.put(view.new_length, B);
  const size_t window_base = p.put(view.window_base, B);
  const size_t store_size = G > 0 ? p.put(view.store_size, static_cast<size_t>(B) * G) : 0;
  const size_t score_indptr = G > 0 ? p.put(view.score_indptr, static_cast<size_t>(B) * G + 1) : 0;
  const size_t row_begin = p.put(batch.row_begin, B + 1);
  const size_t first_pos = p.put(batch.first_pos, B);
  const size_t score_from = batch.score_from != nullptr ? p.put(batch.score_from, B) : 0;
  const size_t row_entry = p.put(s.row_entry.data(), s.row_entry.size());
  const size_t decode_rows = p.put(s.decode_rows.data(), s.decode_rows.size());
  const size_t prefill_tiles = p.put(s.prefill_tiles.data(), s.prefill_tiles.size());
  const size_t bytes = p.bytes().size();
  if (bytes > s.step_capacity) {
    synchronize();  // kernels of the last step may still read the old buffer
    cudaFree(s.step_buffer);
    s.step_buffer = nullptr;
    s.step_capacity = std::max(bytes, 2 * s.step_capacity);
    s.step_buffer = static_cast<uint8_t*>(device_alloc(s.step_capacity, "the step's descriptors"));
  }
  upload(s.step_buffer, p.bytes().data(), bytes);

  // The indices after the indptr: while decode steps add pages, the indptr and the indices keep
  // their places (and a step graph's arguments stay valid) unless the buffer grows.
  const size_t indptr_bytes = (streams + 1) * sizeof(int64_t), indices_at = (indptr_bytes + 15) / 16 * 16;
  const size_t tables_bytes = indices_at + static_cast<size_t>(view.page_indptr[streams]) * sizeof(int32_t);
  if (view.tables_generation == 0 || view.tables_generation != s.tables_generation) {
    if (tables_bytes > s.tables_capacity) {
      synchronize();
      cudaFree(s.tables_buffer);
      s.tables_buffer = nullptr;
      s.tables_generation = 0;
      s.tables_capacity = std::max(tables_bytes, 2 * s.tables_capacity);
      s.tables_buffer = static_cast<uint8_t*>(device_alloc(s.tables_capacity, "the step's page tables"));
    }
    // Where the buffer holds the view's base generation laid out for as many streams, the streams
    // before tables_same_streams are there already (a step where one sequence crossed a page sends
    // the tables from that sequence on).
    const bool partial = view.tables_base_generation != 0 && view.tables_base_generation == s.tables_generation &&
                         s.tables_streams == streams && view.tables_same_streams >= 0 &&
                         static_cast<size_t>(view.tables_same_streams) <= streams;
    const size_t first = partial ? static_cast<size_t>(view.tables_same_streams) : 0;
    const size_t first_index = static_cast<size_t>(view.page_indptr[first]);
    upload(s.tables_buffer + first * sizeof(int64_t), view.page_indptr + first, indptr_bytes - first * sizeof(int64_t));
    upload(s.tables_buffer + indices_at + first_index * sizeof(int32_t), view.page_indices + first_index,
           tables_bytes - indices_at - first_index * sizeof(int32_t));
    s.tables_generation = view.tables_generation;
    s.tables_streams = streams;
  }

  uint8_t* base = s.step_buffer;
  cuda::DeviceStep& d = s.step;
  d.dtype = static_cast<int32_t>(view.dtype);
  d.pool = view.pool;
  d.page_tokens = view.page_tokens;
  d.entry_bytes = view.entry_bytes;
  d.page_bytes = view.page_bytes;
  d.num_layers = L;
  d.num_kv_heads = H;
  d.head_dim = view.head_dim;
  d.sink_tokens = view.sink_tokens;
  d.recent_tokens = view.recent_tokens;
  d.key_rules = reinterpret_cast<const KvRule*>(base + key_rules);
  d.value_rules = reinterpret_cast<const KvRule*>(base + value_rules);
  d.num_groups = G;
  d.num_seqs = B;
  d.rows = rows;
  d.new_length = reinterpret_cast<const int64_t*>(base + new_length);
  d.window_base = reinterpret_cast<const int64_t*>(base + window_base);
  d.page_indptr = reinterpret_cast<const int64_t*>(s.tables_buffer);
  d.page_indices = reinterpret_cast<const int32_t*>(s.tables_buffer + indices_at);
  d.store_size = G > 0 ? reinterpret_cast<const int64_t*>(base + store_size) : nullptr;
  d.score_indptr = G > 0 ? reinterpret_cast<const int64_t*>(base + score_indptr) : nullptr;
  d.row_begin = reinterpret_cast<const int64_t*>(base + row_begin);
  d.first_pos = reinterpret_cast<const int64_t*>(base + first_pos);
  d.score_from = batch.score_from != nullptr ? reinterpret_cast<const int64_t*>(base + score_from) : nullptr;
  d.row_entry = reinterpret_cast<const int32_t*>(base + row_entry);
  d.decode_rows = num_tiles > 0 ? reinterpret_cast<const int32_t*>(base + decode_rows) : nullptr;
  d.prefill_tiles = num_tiles > 0 ? reinterpret_cast<const int32_t*>(base + prefill_tiles) : nullptr;
  d.num_prefill_tiles = num_tiles;
  // Rows the decode kernels take (the rest: tiled prefill).
  d.num_decode_rows = num_tiles > 0 ? static_cast<int64_t>(s.decode_rows.size()) : rows;
  max_keys_ = 1;
  for (int b = 0; b < B; ++b)
    max_keys_ = std::max(max_keys_, batch.first_pos[b] + batch.row_begin[b + 1] - batch.row_begin[b]);
  has_step_ = true;
}

void CudaBackendOps::kv_write(int layer, const float* k, const float* v) {
  check(has_step_, "kv_write: no step (call set_step first)");
  check(layer >= 0 && layer < view_.num_layers, "kv_write: no layer " + std::to_string(layer));
  cuda::kv_write(state_->step, layer, k, v, state_->stream);
}

void CudaBackendOps::split_qkv_rope_kv_write(int layer, const float* qkv, int64_t rows, int heads, int kv_heads,
                                             int dim, const int64_t* positions, const float* inv_freq,
                                             bool interleaved, float* q, float* k, float* v) {
  check(has_step_, "split_qkv_rope_kv_write: no step (call set_step first)");
  check(layer >= 0 && layer < view_.num_layers, "split_qkv_rope_kv_write: no layer " + std::to_string(layer));
  const cuda::DeviceStep& step = state_->step;
  check(rows == step.rows && kv_heads == step.num_kv_heads && dim == step.head_dim,
        "split_qkv_rope_kv_write: " + std::to_string(rows) + " rows, " + std::to_string(kv_heads) + " KV heads of " +
            std::to_string(dim) + " against the step's " + std::to_string(step.rows) + ", " +
            std::to_string(step.num_kv_heads) + " of " + std::to_string(step.head_dim));
  check(dim % 2 == 0, "rope: head_dim " + std::to_string(dim) + " must be even");
  cuda::split_qkv_rope_kv_write(step, layer, qkv, heads, positions, inv_freq, interleaved, q, k, v, state_->stream);
}

bool CudaBackendOps::scored_rows() const {
  if (view_.num_groups == 0 || batch_.score_from == nullptr) return false;
  for (int b = 0; b < batch_.num_seqs; ++b)
    if (batch_.first_pos[b] + batch_.row_begin[b + 1] - batch_.row_begin[b] - 1 >= batch_.score_from[b]) return true;
  return false;
}

namespace {
// The fewest keys one split of the tensor-core decode kernel takes: 64 (of 32, 64, 128 and 256
// measured on the H200, docs/gpu-bench/decode-tuning: 64 was 1% faster than 32 at batch 1 and
// 4096 keys; 256 was 10% slower), or PODKV_CUDA_DECODE_SPLIT_KEYS (16..65536: a knob for tuning
// on other GPUs, scripts/tuning_gpu.sh). Read once.
int64_t min_split_keys() {
  static const int64_t keys = [] {
    const char* s = std::getenv("PODKV_CUDA_DECODE_SPLIT_KEYS");
    const long v = s != nullptr ? std::strtol(s, nullptr, 10) : 0;
    return v >= 16 && v <= 65536 ? static_cast<int64_t>(v) : int64_t{64};
  }();
  return keys;
}
}  // namespace

int CudaBackendOps::decode_splits(int num_heads, bool scored) const {
  // Rows that add selection scores need the one-block-per-query kernel (its second pass over the keys).
  if (scored || !cuda::decode_attention_fits(view_.head_dim)) return 0;
  const int kv_heads = view_.num_kv_heads, groups = num_heads / kv_heads;
  const int64_t rows = std::max<int64_t>(1, state_->step.num_decode_rows);
  if (cuda::decode_attention_mma_fits(view_.head_dim, static_cast<int32_t>(view_.dtype), view_.num_groups)) {
    // Splits are warps: one wave of the resident warps (a second, partial wave would leave the
    // GPU half idle), each warp at least min_split_keys() keys.
    int& per_sm = state_->mma_warps_per_sm[view_.head_dim / 32];
    if (per_sm == 0) per_sm = cuda::decode_attention_mma_warps_per_sm(view_.head_dim);
    const int64_t units = std::max<int64_t>(1, rows * kv_heads * ((groups + 15) / 16));
    const int64_t resident = static_cast<int64_t>(per_sm) * state_->num_sms;
    const int64_t min_keys = min_split_keys();
    return static_cast<int>(std::clamp<int64_t>(std::min<int64_t>(resident / units, 1024), 1,
                                                std::max<int64_t>(1, (max_keys_ + min_keys - 1) / min_keys)));
  }
  // Splits are blocks: about four per SM, each chunk at least 64 keys.
  const int64_t blocks = std::max<int64_t>(1, rows * kv_heads * ((groups + 7) / 8));
  return static_cast<int>(
      std::clamp<int64_t>((4 * state_->num_sms + blocks - 1) / blocks, 1, std::max<int64_t>(1, max_keys_ / 64)));
}

void CudaBackendOps::attention(const AttentionParams& params, const float* q, const AttentionOutputs& outputs) {
  check(has_step_, "attention: no step (call set_step first)");
  const int kv_heads = view_.num_kv_heads;
  check(params.num_heads >= 1 && params.num_heads % kv_heads == 0,
        "attention: " + std::to_string(params.num_heads) + " query heads over " + std::to_string(kv_heads) +
            " KV heads is not supported");
  check(params.layer >= 0 && params.layer < view_.num_layers, "attention: no layer " + std::to_string(params.layer));
  const bool counts_skips = params.tau < 1.0f && outputs.gates != nullptr;
  if (counts_skips) fill_zero(state_->counter, sizeof(unsigned long long));
  cuda::AttentionLaunch launch;
  launch.layer = params.layer;
  launch.num_heads = params.num_heads;
  launch.scale = params.scale;
  launch.tau = params.tau;
  launch.out = outputs.out;
  launch.all_gates = outputs.gates;
  launch.scores = view_.num_groups > 0 ? outputs.scores : nullptr;
  launch.skipped = state_->counter;
  const int splits = decode_splits(params.num_heads, launch.scores != nullptr && scored_rows());
  if (splits > 0) {
    const cuda::DeviceStep& step = state_->step;
    const int64_t rows = std::max<int64_t>(1, step.num_decode_rows);
    const size_t floats = cuda::decode_attention_partial_floats(rows, params.num_heads, splits, view_.head_dim);
    grow(state_->partials, state_->partial_capacity, floats, "attention partials");
    if (step.num_prefill_tiles > 0)
      cuda::prefill_attention(step, launch, q, step.prefill_tiles, step.num_prefill_tiles, state_->stream);
    if (step.num_decode_rows > 0) cuda::decode_attention(step, launch, q, splits, state_->partials, state_->stream);
  } else {
    cuda::attention(state_->step, launch, q, state_->stream);
  }
  if (outputs.stats == nullptr) return;
  count_attention_stats(params, *outputs.stats);
  if (counts_skips) {
    unsigned long long skipped = 0;
    download(&skipped, state_->counter, sizeof(skipped));
    outputs.stats->skipped_distant_parts += static_cast<int64_t>(skipped);
  }
}

void CudaBackendOps::count_attention_stats(const AttentionParams& params, AttentionStats& stats) const {
  // Distant parts follow from the positions and rules alone (as attention.cpp counts them).
  const int kv_heads = view_.num_kv_heads, groups = params.num_heads / kv_heads;
  const bool split = view_.recent_tokens > 0;
  int64_t distant_parts = 0;
  for (int h = 0; h < kv_heads; ++h) {
    const KvRule& rule = view_.key_rules[params.layer * kv_heads + h];
    const bool shared = rule.retention == kRetainWindow || rule.retention == kRetainNone;
    if (!shared || rule.distant_source < 0) continue;
    for (int b = 0; b < batch_.num_seqs; ++b)
      for (int64_t t = 0; t < batch_.row_begin[b + 1] - batch_.row_begin[b]; ++t)
        if (has_distant(batch_.first_pos[b] + t, view_.sink_tokens, view_.recent_tokens, split)) distant_parts += groups;
  }
  stats.distant_parts += distant_parts;
}

std::string CudaBackendOps::step_key(int num_heads) const {
  std::string key(reinterpret_cast<const char*>(&state_->step), sizeof(cuda::DeviceStep));
  const int64_t extra[] = {decode_splits(num_heads, scored_rows()),
                           reinterpret_cast<int64_t>(state_->partials), reinterpret_cast<int64_t>(state_->gemv_scratch),
                           reinterpret_cast<int64_t>(state_->split)};
  key.append(reinterpret_cast<const char*>(extra), sizeof(extra));
  return key;
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
