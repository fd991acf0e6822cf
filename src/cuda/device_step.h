// The step's KV view and batch as the kernels read them: the KvView's plain
// arrays (kv/kv_view.h) and the AttentionBatch's, mirrored in device memory
// by CudaBackendOps::set_step, plus row_entry (the batch entry of each row).
// No C++ objects: the struct is passed to kernels by value.
#pragma once

#include <cstdint>

#include "kv/kv_view.h"

namespace podkv::cuda {

struct DeviceStep {
  int32_t dtype = 0;  // KvDType
  uint8_t* pool = nullptr;
  int64_t page_tokens = 0, entry_bytes = 0, page_bytes = 0;
  int num_layers = 0, num_kv_heads = 0, head_dim = 0;
  int64_t sink_tokens = 0, recent_tokens = 0;
  const KvRule* key_rules = nullptr;    // [L * H_kv]
  const KvRule* value_rules = nullptr;  // [L * H_kv]
  int num_groups = 0, num_seqs = 0;
  int64_t rows = 0;
  const int64_t* new_length = nullptr;   // [B]
  const int64_t* window_base = nullptr;  // [B]
  const int64_t* page_indptr = nullptr;  // [B * 4 * L * H_kv + 1]
  const int32_t* page_indices = nullptr;
  const int64_t* store_size = nullptr;    // [B * G]
  const int64_t* score_indptr = nullptr;  // [B * G + 1]
  const int64_t* row_begin = nullptr;     // [B + 1]
  const int64_t* first_pos = nullptr;     // [B]
  const int64_t* score_from = nullptr;    // [B], or null
  const int32_t* row_entry = nullptr;     // [rows]
  // The rows the decode kernels take (those of entries the tiled prefill kernel does not), in
  // order; their partial results are stored by index in this list. Null when no entry is tiled:
  // every row, row i at index i.
  const int32_t* decode_rows = nullptr;   // [num_decode_rows]
  int64_t num_decode_rows = 0;
  const int32_t* prefill_tiles = nullptr; // [num_prefill_tiles][2]: entry, first row within it
  int64_t num_prefill_tiles = 0;
};

// One attention launch (one layer): AttentionParams and AttentionOutputs in device memory.
struct AttentionLaunch {
  int layer = 0, num_heads = 0;
  float scale = 1.0f, tau = 1.0f;
  float* out = nullptr;        // [rows, H * d]
  // Or, where not null, the prefill kernels write their rows here instead, rounded to bf16 as
  // split_bf16 rounds (the staged input of the o projection's GEMM; only steps of prompt rows alone).
  uint16_t* out_bf16 = nullptr;  // [rows, H * d]
  // Q in bf16, pre-scaled by scale * log2(e) (split_qkv_rope_kv_write's prompt form), where not null:
  // the prefill kernels read it instead of the float32 q (only steps of prompt rows alone).
  const uint16_t* q_bf16 = nullptr;  // [rows, H * d]
  float* all_gates = nullptr;  // [L][rows * H], or null
  float* scores = nullptr;     // the view's score output, or null
  unsigned long long* skipped = nullptr;  // counter of skipped distant parts
};

}  // namespace podkv::cuda
