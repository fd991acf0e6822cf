// CudaBackendOps' private state, shared by its two files: cuda_backend_ops.cpp (memory, the ops,
// profiling and step graphs) and cuda_backend_step.cpp (the step's descriptors and attention).
#pragma once

#include "backend/cuda_backend_ops.h"

#if defined(PODKV_HAVE_CUDA)

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cuda/device_step.h"
#include "cuda/gemm_lt.h"

namespace podkv {

struct CudaBackendOps::State {
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
  bool fuse_swiglu = false, fuse_norm = false, fuse_chain = false, fuse_rope = false;  // set_decode_fusions
  bool fuse_qk_norm = true;  // set_qk_norm_fusion
  int64_t chain_launches = 0, chain_rope_launches = 0;  // decode_chain_launches, decode_chain_rope_launches
  bool prompt_bf16 = true;                       // PODKV_CUDA_PREFILL_FUSE=0 turns it off
  bool stage_attention = true;                   // PODKV_CUDA_PREFILL_STAGE_ATTENTION=0 turns it off
  int64_t staged_attention_launches = 0;         // attention_staged calls that staged
  bool q_bf16 = true;                            // PODKV_CUDA_PREFILL_Q_BF16=0 turns it off
  bool qkv_bf16 = false;                         // PODKV_CUDA_PREFILL_QKV_BF16=1 turns it on
  int64_t bf16_q_attention_launches = 0;         // attention_staged calls that read Q in bf16
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

}  // namespace podkv

#endif
