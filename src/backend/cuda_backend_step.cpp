// CudaBackendOps' step: the descriptors of a step's paged view and batch sent to the device
// (set_step), the KV writes, and attention with its choice of kernel and split.
#include "backend/cuda_backend_state.h"

#if defined(PODKV_HAVE_CUDA)

#include <algorithm>
#include <cstdlib>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "kv/token_classes.h"

namespace podkv {

using cuda::device_alloc;

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

  State::Packer& p = s.packer;
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
                                             bool interleaved, float* q, float* k, float* v, uint16_t* q_bf16,
                                             float q_scale, bool qkv_bf16, const float* q_norm, const float* k_norm,
                                             double norm_eps) {
  check(has_step_, "split_qkv_rope_kv_write: no step (call set_step first)");
  check(layer >= 0 && layer < view_.num_layers, "split_qkv_rope_kv_write: no layer " + std::to_string(layer));
  const cuda::DeviceStep& step = state_->step;
  check(rows == step.rows && kv_heads == step.num_kv_heads && dim == step.head_dim,
        "split_qkv_rope_kv_write: " + std::to_string(rows) + " rows, " + std::to_string(kv_heads) + " KV heads of " +
            std::to_string(dim) + " against the step's " + std::to_string(step.rows) + ", " +
            std::to_string(step.num_kv_heads) + " of " + std::to_string(step.head_dim));
  check(dim % 2 == 0, "rope: head_dim " + std::to_string(dim) + " must be even");
  cuda::split_qkv_rope_kv_write(step, layer, qkv, heads, positions, inv_freq, interleaved, q, k, v, q_bf16, q_scale,
                                qkv_bf16, cuda::HeadNorms{q_norm, k_norm, norm_eps}, state_->stream);
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
  run_attention(params, q, outputs, false, nullptr);
}

bool CudaBackendOps::attention_staged(const AttentionParams& params, const float* q, const AttentionOutputs& outputs,
                                      const uint16_t* q_bf16) {
  return run_attention(params, q, outputs, state_->stage_attention, q_bf16);
}

bool CudaBackendOps::prefill_rows_only(int num_heads) const {
  // Prefill tiles exist only without selection groups, so no row adds selection scores.
  const cuda::DeviceStep& step = state_->step;
  return has_step_ && step.num_prefill_tiles > 0 && step.num_decode_rows == 0 && decode_splits(num_heads, false) > 0;
}

bool CudaBackendOps::prompt_q_bf16(int num_heads) const { return state_->q_bf16 && prefill_rows_only(num_heads); }

void CudaBackendOps::set_prompt_q_bf16(bool on) { state_->q_bf16 = on; }

bool CudaBackendOps::prompt_qkv_bf16() const { return state_->qkv_bf16; }

void CudaBackendOps::set_prompt_qkv_bf16(bool on) { state_->qkv_bf16 = on; }

int64_t CudaBackendOps::bf16_q_attention_launches() const { return state_->bf16_q_attention_launches; }

bool CudaBackendOps::run_attention(const AttentionParams& params, const float* q, const AttentionOutputs& outputs,
                                   bool stage, const uint16_t* q_bf16) {
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
  const cuda::DeviceStep& step = state_->step;
  // Staged: every row is a prompt row of the prefill kernels, which then write bf16 (stage_rows' bytes).
  const bool prompt_only = splits > 0 && step.num_prefill_tiles > 0 && step.num_decode_rows == 0;
  const bool staged = stage && prompt_only;
  if (q_bf16 != nullptr) {
    check(prompt_only, "attention: Q in bf16 for a step that is not the prefill kernels' alone");
    launch.q_bf16 = q_bf16;
    ++state_->bf16_q_attention_launches;
  }
  if (staged) {
    const int64_t cols = static_cast<int64_t>(params.num_heads) * view_.head_dim;
    launch.out_bf16 = bf16_scratch(step.rows * cols);
    state_->staged_rows = step.rows, state_->staged_cols = cols;
    ++state_->staged_attention_launches;
  }
  if (splits > 0) {
    const int64_t rows = std::max<int64_t>(1, step.num_decode_rows);
    const size_t floats = cuda::decode_attention_partial_floats(rows, params.num_heads, splits, view_.head_dim);
    grow(state_->partials, state_->partial_capacity, floats, "attention partials");
    if (step.num_prefill_tiles > 0)
      cuda::prefill_attention(step, launch, q, step.prefill_tiles, step.num_prefill_tiles, state_->stream);
    if (step.num_decode_rows > 0) cuda::decode_attention(step, launch, q, splits, state_->partials, state_->stream);
  } else {
    cuda::attention(state_->step, launch, q, state_->stream);
  }
  if (outputs.stats == nullptr) return staged;
  count_attention_stats(params, *outputs.stats);
  if (counts_skips) {
    unsigned long long skipped = 0;
    download(&skipped, state_->counter, sizeof(skipped));
    outputs.stats->skipped_distant_parts += static_cast<int64_t>(skipped);
  }
  return staged;
}

int64_t CudaBackendOps::staged_attention_launches() const { return state_->staged_attention_launches; }

void CudaBackendOps::set_attention_staging(bool on) { state_->stage_attention = on; }

bool CudaBackendOps::attention_staging() const { return state_->stage_attention; }

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

}  // namespace podkv

#endif
