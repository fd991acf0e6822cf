// The prompt path's bf16 GEMMs through cuBLASLt, with the algorithm for large row counts chosen by
// timing the candidates cuBLASLt's heuristic proposes (its first is not always the fastest: the o
// projection added into the float32 residual stream, for one, has a float32 C to read and write).
//
//   y[m, n] = W[k, m]ᵀ · a[k, n] + beta · y     column-major (row-major y[n rows, m] = a · Wᵀ),
//                                               W and a bf16, float32 accumulation, y float32 or bf16
//
// The same product as cublasGemmEx(OP_T, OP_N, m, n, k, W, k, a, k, y, m, COMPUTE_32F), whose own
// heuristic picks its algorithm; algorithms differ in their order of summation (split-K, tiles), so
// results may differ from it, and from another process's choice, in their last bits.
// Timing: the first time a shape of kTimedRows or more rows runs outside a CUDA graph capture, its
// candidates run on a scratch output (y is not touched), interleaved over a few rounds, and the
// fastest is kept for every row count of its power-of-two bucket (checked against each exact shape,
// which otherwise takes the heuristic's first): a server's prompt chunks of many lengths time a few
// buckets, not every length. Smaller shapes (decode batches), shapes met first inside a capture (no
// synchronising there) and shapes whose scratch would be too large take the heuristic's first.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <tuple>

namespace podkv::cuda {

class GemmLt {
 public:
  // Fewer rows: GEMMs of tens of microseconds, whose timings the host's launches would blur.
  static constexpr int kTimedRows = 1024;

  // `workspace` (device, `workspace_bytes`) is shared with the caller's other cuBLAS calls on `stream`.
  // tune false: every shape takes the heuristic's first candidate, untimed.
  GemmLt(cudaStream_t stream, void* workspace, size_t workspace_bytes, bool tune);
  ~GemmLt();
  GemmLt(const GemmLt&) = delete;
  GemmLt& operator=(const GemmLt&) = delete;

  // Queues y = Wᵀ a + beta y on the stream (y_type CUDA_R_32F or CUDA_R_16BF). False, queuing
  // nothing, where cuBLASLt proposes no algorithm for the shape and its pointers' alignments (the
  // caller then takes cublasGemmEx).
  bool run(const void* w, const void* a, int m, int n, int k, void* y, cudaDataType_t y_type, float beta);

  // How many buckets were timed.
  int timed_shapes() const { return timed_; }

 private:
  // A shape: m, n, k, output type, whether beta is nonzero, and the pointers' alignments (the
  // algorithms cuBLASLt proposes depend on them). A bucket's key has n rounded up to a power of two.
  using Key = std::tuple<int, int, int, int, bool, int, int, int>;
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool has_algo = false;  // false: no candidate (run declines the shape)
  };
  static void destroy(Plan& p);
  Plan& plan(const Key& key, const void* w, const void* a, cudaDataType_t y_type, float beta);
  // The plan's algorithm: the bucket's timed choice where it holds for this shape, else timed now
  // (when allowed) or the heuristic's first.
  void choose(Plan& p, const Key& key, const void* w, const void* a, cudaDataType_t y_type, float beta);
  // The fastest of `count` candidates on a scratch output (index into algos; -1: no timing possible).
  int fastest(const Plan& p, const cublasLtMatmulAlgo_t* algos, int count, const void* w, const void* a,
              size_t scratch_bytes, float beta);

  cudaStream_t stream_;
  void* workspace_;
  size_t workspace_bytes_;
  bool tune_;
  cublasLtHandle_t handle_ = nullptr;
  std::map<Key, Plan> plans_;                    // by exact shape (at most kMaxPlans, then cleared)
  std::map<Key, cublasLtMatmulAlgo_t> chosen_;   // by bucket: the timed choice
  int timed_ = 0;
};

}  // namespace podkv::cuda
