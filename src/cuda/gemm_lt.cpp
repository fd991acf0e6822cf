#include "cuda/gemm_lt.h"

#include <cstdint>
#include <limits>
#include <tuple>

#include "cuda/cuda_check.h"

namespace podkv::cuda {

namespace {

constexpr int kCandidates = 8;  // asked of the heuristic
constexpr int kRounds = 3;      // timing rounds, each running every candidate once (after a warm-up run)
// Another candidate replaces the heuristic's first only when this much faster: timings of equal
// kernels differ by a percent or so, and a choice made on noise would change results in their last
// bits from process to process for nothing.
constexpr float kMargin = 0.97f;
// Shapes whose output would need more scratch than this keep the first candidate (an LM head over
// a whole prompt chunk: 4096 rows x 128K logits is 2 GiB).
constexpr size_t kMaxScratchBytes = size_t{512} << 20;
constexpr size_t kMaxPlans = 512;  // exact shapes kept; past that all are dropped and made again

// The largest power of two up to 256 that divides the address (cuBLASLt's algorithms need their
// operands aligned; what it proposes depends on what they are).
int alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && v % static_cast<uintptr_t>(a) != 0) a /= 2;
  return a;
}

int power_of_two_at_least(int n) {
  int b = 1;
  while (b < n && b < (1 << 30)) b *= 2;
  return b;
}

template <typename T>
void set_attribute(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t what, T value) {
  PODKV_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, what, &value, sizeof(value)));
}

// Device scratch and events freed on every path.
struct Scratch {
  void* data = nullptr;
  ~Scratch() {
    if (data != nullptr) cudaFree(data);
  }
};
struct Events {
  cudaEvent_t start = nullptr, stop = nullptr;
  ~Events() {
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
  }
};

}  // namespace

GemmLt::GemmLt(cudaStream_t stream, void* workspace, size_t workspace_bytes, bool tune)
    : stream_(stream), workspace_(workspace), workspace_bytes_(workspace_bytes), tune_(tune) {
  PODKV_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

GemmLt::~GemmLt() {
  for (auto& [key, p] : plans_) destroy(p);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

void GemmLt::destroy(Plan& p) {
  if (p.a != nullptr) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b != nullptr) cublasLtMatrixLayoutDestroy(p.b);
  if (p.c != nullptr) cublasLtMatrixLayoutDestroy(p.c);
  if (p.op != nullptr) cublasLtMatmulDescDestroy(p.op);
  p = Plan{};
}

bool GemmLt::run(const void* w, const void* a, int m, int n, int k, void* y, cudaDataType_t y_type, float beta) {
  const Key key{m, n, k, static_cast<int>(y_type), beta != 0.0f, alignment(w), alignment(a), alignment(y)};
  const Plan& p = plan(key, w, a, y_type, beta);
  if (!p.has_algo) return false;
  const float alpha = 1.0f;
  PODKV_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, a, p.b, &beta, y, p.c, y, p.c, &p.algo, workspace_,
                                    workspace_bytes_, stream_));
  return true;
}

GemmLt::Plan& GemmLt::plan(const Key& key, const void* w, const void* a, cudaDataType_t y_type, float beta) {
  const auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  if (plans_.size() >= kMaxPlans) {
    for (auto& [old_key, old] : plans_) destroy(old);
    plans_.clear();
  }
  const int m = std::get<0>(key), n = std::get<1>(key), k = std::get<2>(key);
  Plan& p = plans_[key];  // owns the descriptors from here on (destroy frees them)
  try {
    // Column-major: op(A) = Wᵀ with W stored [k, m] (ld k), B = a stored [k, n] (ld k), C = D = y [m, n].
    PODKV_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    PODKV_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
    PODKV_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof(keep)));
    PODKV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, k, m, k));
    PODKV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, k, n, k));
    PODKV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, y_type, m, n, m));
    choose(p, key, w, a, y_type, beta);
  } catch (...) {
    destroy(p);
    plans_.erase(key);  // a plan without an algorithm is not kept
    throw;
  }
  return p;
}

void GemmLt::choose(Plan& p, const Key& key, const void* w, const void* a, cudaDataType_t y_type, float beta) {
  const int m = std::get<0>(key), n = std::get<1>(key);
  const int align_w = std::get<5>(key), align_a = std::get<6>(key), align_y = std::get<7>(key);
  cublasLtMatmulPreference_t pref = nullptr;
  PODKV_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
  int found = 0;
  try {
    set_attribute<uint64_t>(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, workspace_bytes_);
    set_attribute<uint32_t>(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, static_cast<uint32_t>(align_w));
    set_attribute<uint32_t>(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, static_cast<uint32_t>(align_a));
    set_attribute<uint32_t>(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, static_cast<uint32_t>(align_y));
    set_attribute<uint32_t>(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, static_cast<uint32_t>(align_y));
    PODKV_CUBLAS_CHECK(
        cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, kCandidates, results, &found));
  } catch (...) {
    cublasLtMatmulPreferenceDestroy(pref);
    throw;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatmulAlgo_t algos[kCandidates];
  int count = 0;
  for (int i = 0; i < found; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= workspace_bytes_)
      algos[count++] = results[i].algo;
  if (count == 0) return;  // run declines the shape
  p.algo = algos[0], p.has_algo = true;

  // The bucket's choice, where it holds for this exact shape.
  Key bucket = key;
  std::get<1>(bucket) = power_of_two_at_least(n);
  const auto chosen = chosen_.find(bucket);
  if (chosen != chosen_.end()) {
    cublasLtMatmulHeuristicResult_t check{};
    if (cublasLtMatmulAlgoCheck(handle_, p.op, p.a, p.b, p.c, p.c, &chosen->second, &check) == CUBLAS_STATUS_SUCCESS &&
        check.workspaceSize <= workspace_bytes_)
      p.algo = chosen->second;
    return;
  }
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  PODKV_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
  const size_t scratch_bytes = static_cast<size_t>(m) * n * (y_type == CUDA_R_32F ? 4 : 2);
  if (!tune_ || n < kTimedRows || count == 1 || capture != cudaStreamCaptureStatusNone ||
      scratch_bytes > kMaxScratchBytes)
    return;
  const int best = fastest(p, algos, count, w, a, scratch_bytes, beta);
  if (best < 0) return;
  p.algo = algos[best];
  chosen_[bucket] = algos[best];
  ++timed_;
}

int GemmLt::fastest(const Plan& p, const cublasLtMatmulAlgo_t* algos, int count, const void* w, const void* a,
                    size_t scratch_bytes, float beta) {
  Scratch scratch;
  if (cudaMalloc(&scratch.data, scratch_bytes) != cudaSuccess) {
    cudaGetLastError();  // no memory to spare for timing: the first candidate
    return -1;
  }
  Events events;
  PODKV_CUDA_CHECK(cudaMemsetAsync(scratch.data, 0, scratch_bytes, stream_));  // zeros (beta reads them)
  PODKV_CUDA_CHECK(cudaEventCreate(&events.start));
  PODKV_CUDA_CHECK(cudaEventCreate(&events.stop));
  const float alpha = 1.0f;
  auto launch = [&](int i) {
    return cublasLtMatmul(handle_, p.op, &alpha, w, p.a, a, p.b, &beta, scratch.data, p.c, scratch.data, p.c,
                          &algos[i], workspace_, workspace_bytes_, stream_);
  };
  bool usable[kCandidates];
  float best_ms[kCandidates];
  for (int i = 0; i < count; ++i) {
    best_ms[i] = std::numeric_limits<float>::infinity();
    usable[i] = launch(i) == CUBLAS_STATUS_SUCCESS;  // the warm-up; one that does not run is not taken
    if (!usable[i]) cudaGetLastError();                // and leaves no error for the next launch check
  }
  // Rounds of every candidate in turn, each kept at its best round: drift of the clocks over the
  // timing hits all of them alike.
  for (int round = 0; round < kRounds; ++round)
    for (int i = 0; i < count; ++i) {
      if (!usable[i]) continue;
      PODKV_CUDA_CHECK(cudaEventRecord(events.start, stream_));
      PODKV_CUBLAS_CHECK(launch(i));
      PODKV_CUDA_CHECK(cudaEventRecord(events.stop, stream_));
      PODKV_CUDA_CHECK(cudaEventSynchronize(events.stop));
      float ms = 0.0f;
      PODKV_CUDA_CHECK(cudaEventElapsedTime(&ms, events.start, events.stop));
      if (ms < best_ms[i]) best_ms[i] = ms;
    }
  PODKV_CUDA_CHECK(cudaStreamSynchronize(stream_));
  int best = -1;
  for (int i = 0; i < count; ++i)
    if (usable[i] && (best < 0 || best_ms[i] < best_ms[best])) best = i;
  if (best > 0 && usable[0] && !(best_ms[best] < kMargin * best_ms[0])) best = 0;
  return best;
}

}  // namespace podkv::cuda
