// Launchers of the CUDA kernels (one family per .cu file beside this), called
// by CudaBackendOps. Pointers are device memory; every launcher runs on
// `stream` and throws Error when the launch fails.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/device_step.h"
#include "kv/kv_pool.h"
#include "util/dtype.h"

namespace podkv::cuda {

// embedding.cu: table [vocab, hidden] in F32/F16/BF16/Q8_0; tokens outside the table give rows of zeros
// (the runner checks ids before a step).
void embedding(DType dtype, const void* table, int64_t vocab, int64_t hidden, const int32_t* tokens, int64_t rows,
               float* out, cudaStream_t stream);
void gather_rows(const float* x, int64_t width, const int64_t* rows, int64_t count, float* out, cudaStream_t stream);

// norm.cu: RMSNorm of each row, sums of squares in double.
void rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, double eps, float* out,
              cudaStream_t stream);
// The same norm rounded to bf16 for the next GEMM's input: the bits of rms_norm then split_bf16.
void rms_norm_bf16(const float* x, const float* weight, int64_t rows, int64_t n, double eps, uint16_t* out,
                   cudaStream_t stream);
// x += residual, then out = RMSNorm(x) (one launch for the residual add and the next norm).
void add_rms_norm(float* x, const float* residual, const float* weight, int64_t rows, int64_t n, double eps, float* out,
                  cudaStream_t stream);
// Qwen3's q and k norms, in place on the stacked projection qkv [rows, stride]: each of the `heads`
// q heads (columns h * dim) and the `kv_heads` k heads after them RMS-normalized over its dim (<= 128)
// elements with q_weight or k_weight [dim]; v untouched.
void head_rms_norm(float* qkv, int64_t rows, int64_t stride, int heads, int kv_heads, int dim, const float* q_weight,
                   const float* k_weight, double eps, cudaStream_t stream);

// rope.cu: angle float32(pos) * inv_freq[i] in float32, its cos and sin in double.
void rope(float* x, int64_t rows, int heads, int dim, const int64_t* positions, const float* inv_freq, bool interleaved,
          cudaStream_t stream);
// The stacked projection's output qkv [rows, (heads + 2 kv_heads) * dim] = [q | k | v] split into
// q [rows, heads * dim], k and v [rows, kv_heads * dim], q and k rotated as rope() rotates them.
void split_qkv_rope(const float* qkv, int64_t rows, int heads, int kv_heads, int dim, const int64_t* positions,
                    const float* inv_freq, bool interleaved, float* q, float* k, float* v, cudaStream_t stream);

// activation.cu: SwiGLU's product, the residual add, a bias on every row, f32 -> bf16 (hi, lo) split.
void silu_mul(float* gate, const float* up, int64_t n, cudaStream_t stream);
// The stacked gate and up projections' output gu [rows, 2 * inter] = [gate | up] -> out [rows, inter].
void silu_mul_rows(const float* gu, int64_t rows, int64_t inter, float* out, cudaStream_t stream);
// The same product from a bf16 gu, as the next GEMM's bf16 input: out = bf16(silu(gate) * up), the
// product in float32 from gu's bf16 values.
void silu_mul_rows_bf16(const uint16_t* gu, int64_t rows, int64_t inter, uint16_t* out, cudaStream_t stream);
void add(float* x, const float* y, int64_t n, cudaStream_t stream);
void add_bias(float* y, const float* bias, int64_t rows, int64_t n, cudaStream_t stream);
// x = hi + lo to about 2^-17 relative: hi = bf16(x), lo = bf16(x - hi) (lo may be null: hi alone).
void split_bf16(const float* x, int64_t n, uint16_t* hi, uint16_t* lo, cudaStream_t stream);

// sampling.cu: one draw per logits row as LogitSampler (sampling/sampler.h) makes it: the
// penalties, greedy or temperature, top-k, top-p, min-p and the draw at u. tokens[r] = the id, or
// -1 where the row cannot be sampled (a NaN or +inf logit, every logit -inf: the host samples it
// again to report the error). scratch: [rows, 2 * vocab] floats.
struct SampleRowArgs {
  float temperature = 0, top_p = 1, min_p = 0, repetition_penalty = 1, presence = 0, frequency = 0;
  int32_t top_k = 0;
  int32_t penalty_begin = 0, penalty_end = 0;  // the row's entries of `penalties`
  double u = 0;
};
struct SamplePenaltyArgs {
  int32_t token, repeated, count;  // as SamplePenalty: each token once per row
};
void sample_rows(const float* logits, int64_t rows, int32_t vocab, const SampleRowArgs* args,
                 const SamplePenaltyArgs* penalties, float* scratch, int32_t* tokens, cudaStream_t stream);
// sampling_greedy.cu: the same tokens for rows that are all greedy with no penalty (temperature 0, an
// empty penalty list), each row's argmax spread over greedy_slices(vocab) blocks. parts: rows *
// greedy_slices(vocab) * 16 bytes of scratch; tickets [rows] zero before the first launch (each launch
// leaves them zero). rows <= kGreedyMaxRows.
constexpr int64_t kGreedyMaxRows = 65535;
int greedy_slices(int32_t vocab);
void greedy_rows(const float* logits, int64_t rows, int32_t vocab, void* parts, unsigned* tickets, int32_t* tokens,
                 cudaStream_t stream);

// random.cu: dst[i] = bf16 of a uniform value in [-bound, bound), a hash of (seed, i): weights for benchmarks.
void fill_random_bf16(uint16_t* dst, int64_t n, uint64_t seed, float bound, cudaStream_t stream);

// gemv.cu: y[rows, out] = x[rows, in] · Wᵀ (+ bias) for rows <= kGemvMaxRows, W in F32/F16/BF16/Q8_0,
// float32 accumulation, W read once. BF16 weights with 2..8 rows run on the tensor cores, split over
// the inputs into `scratch` (gemv_scratch_floats of them; num_sms sizes the split).
constexpr int64_t kGemvMaxRows = 8;
int gemv_splits(int64_t out, int64_t in, int num_sms);
size_t gemv_scratch_floats(DType dtype, int64_t out, int64_t in, int64_t rows, int num_sms);
void gemv(DType dtype, const void* w, int64_t out, int64_t in, const float* x, int64_t rows, float* y,
          const float* bias, float* scratch, int num_sms, cudaStream_t stream);
// One row through SwiGLU's stacked projection W = [gate | up] ([out = 2 * inter, in]): y[inter] =
// silu(x · gateᵀ) * (x · upᵀ), equal to gemv then silu_mul_rows. False (nothing launched) where the
// one-row BF16 kernel does not apply (another dtype, in % 8 != 0, unaligned, PODKV_CUDA_GEMV_ROW=0).
bool gemv_swiglu_row(DType dtype, const void* w, int64_t out, int64_t in, const float* x, float* y, int num_sms,
                     cudaStream_t stream);
// One row into the residual stream: y[out] += x · Wᵀ (add_rms_norm's float32 add), then, with norm_out,
// norm_out = RMSNorm(y) * norm_weight (squares summed in double, as rms_norm), taken by the last block to
// finish. counter: one unsigned in device memory, zero before and after. False (nothing launched) where
// the one-row BF16 kernel does not apply, as for gemv_swiglu_row.
bool gemv_residual_norm_row(DType dtype, const void* w, int64_t out, int64_t in, const float* x, float* y,
                            const float* norm_weight, double eps, float* norm_out, unsigned* counter, int num_sms,
                            cudaStream_t stream);

// The next layer's RoPE and KV write, done in the chain's q | k | v stage (split_qkv_rope_kv_write's
// work for the chain's one row): q, k and v written, q and k rotated, k and v encoded into layer
// `layer`'s entries of `step` (bf16 entries). The stage's units are then rotation pairs
// (decode_chain_plan.h, ChainEpilogue::kRope), and qkv is not written.
struct ChainRope {
  DeviceStep step;
  int layer = 0, heads = 0;
  const int64_t* positions = nullptr;  // [1]
  const float* inv_freq = nullptr;     // [head_dim / 2]
  bool interleaved = false;
  float *q = nullptr, *k = nullptr, *v = nullptr;  // [heads * head_dim], [H_kv * head_dim] x 2
};
constexpr int kChainRopeMaxKvHeads = 64;

// decode_chain.cu: one decode row's layer after attention in one cooperative launch, BF16 weights:
// x += attn · woᵀ; h = silu(gate) * up of RMSNorm(x) * mlp_norm through w_gate_up = [gate | up];
// x += h · w_downᵀ; then, with wqkv (the next layer's), qkv = RMSNorm(x) * next_norm · wqkvᵀ (+ bqkv).
// The per-launch ops' results (gemv, add_rms_norm, gemv_swiglu_row) to float32 rounding: its sums
// are sliced differently. False, nothing launched, where it does not apply:
// a size not a multiple of 8, a pointer not 16-byte aligned, shared memory for the longest input
// (4 max(hidden, q_dim, inter) bytes) beyond a block's, no cooperative launch on the device, or a
// launch of that size that failed before (its error cleared).
struct DecodeChain {
  const uint16_t* wo = nullptr;         // [hidden, q_dim]
  const uint16_t* w_gate_up = nullptr;  // [2 inter, hidden]
  const uint16_t* w_down = nullptr;     // [hidden, inter]
  const uint16_t* wqkv = nullptr;       // [qkv_out, hidden], the next layer's; null after the last layer
  const float* bqkv = nullptr;          // [qkv_out] or null
  const float* mlp_norm = nullptr;      // [hidden]
  const float* next_norm = nullptr;     // [hidden], the next layer's attention norm (with wqkv)
  int64_t hidden = 0, q_dim = 0, inter = 0, qkv_out = 0;
  double eps = 0;
  const float* attn = nullptr;  // [q_dim], attention's output
  float* x = nullptr;           // [hidden], the residual stream, updated
  float* h = nullptr;           // [inter] scratch
  float* qkv = nullptr;         // [qkv_out] (with wqkv and no rope)
  // With wqkv: the next layer's RoPE and KV write too (or null). Taken for one row of bf16 entries,
  // head_dim even and at most 128, at most kChainRopeMaxKvHeads KV heads, qkv_out = (heads + 2 H_kv)
  // head_dim; otherwise the chain does not apply (drop rope and ask again). `interleaved` sets the
  // stage's pairs (decode_chain_plan.h's rope_interleaved).
  const ChainRope* rope = nullptr;
  unsigned* barrier = nullptr;  // kDecodeChainBarrierWords of device memory, zero before the first launch
};
// The grid barrier's words and the stages' task counters, each on a cache line of its own.
constexpr int kDecodeChainBarrierWords = 128;
// Whether decode_chain would launch for `args` (nothing queued).
bool decode_chain_applies(const DecodeChain& args, int num_sms);
bool decode_chain(const DecodeChain& args, int num_sms, cudaStream_t stream);

// kv_write.cu: the step's new keys and values into the pool (encoded), and the pool's entry copies.
void kv_write(const DeviceStep& step, int layer, const float* k, const float* v, cudaStream_t stream);
// split_qkv_rope (qkv [rows, (heads + 2 H_kv) * dim] into q, k, v, q and k rotated) and then kv_write of
// k and v, in one launch with the same results; kv_heads, dim and rows are the step's. With q_bf16
// (the prompt form, for attention by the prefill kernels alone: AttentionLaunch::q_bf16) it writes
// bf16(rotated q * q_scale) [rows, heads * dim] there instead, and no q, k or v in float32; there
// qkv_bf16 says qkv holds bf16 values (the bits, in qkv's buffer) instead of float32. With norms
// (Qwen3's q and k norms, float32 form only) every q and k head is first normalized as
// head_rms_norm does it (the same bits: one launch instead of two).
struct HeadNorms {
  const float* q = nullptr;  // [dim], or null: no norms
  const float* k = nullptr;  // [dim]
  double eps = 0.0;
};
void split_qkv_rope_kv_write(const DeviceStep& step, int layer, const float* qkv, int heads, const int64_t* positions,
                             const float* inv_freq, bool interleaved, float* q, float* k, float* v, uint16_t* q_bf16,
                             float q_scale, bool qkv_bf16, const HeadNorms& norms, cudaStream_t stream);
void copy_entries(uint8_t* pool, int64_t page_bytes, int64_t entry_bytes, const EntryCopy* copies, int64_t count,
                  cudaStream_t stream);

// attention.cu: one layer's attention over the paged view (decode and prefill).
constexpr int kMaxHeadDim = 128;
void attention(const DeviceStep& step, const AttentionLaunch& launch, const float* q, cudaStream_t stream);

// attention_decode.cu (its kernels in attention_decode*.cu): the same attention split over the keys
// ("flash-decoding") for launches without selection scores, over step.num_decode_rows rows;
// `partials` holds decode_attention_partial_floats(step.num_decode_rows, heads, splits, d) floats.
bool decode_attention_fits(int head_dim);
size_t decode_attention_partial_floats(int64_t rows, int num_heads, int splits, int head_dim);
void decode_attention(const DeviceStep& step, const AttentionLaunch& launch, const float* q, int splits,
                      float* partials, cudaStream_t stream);
// Whether decode_attention runs on the tensor cores (bf16 entries, head_dim a multiple of 32, no
// selection stores): then `splits` counts warps, each taking one chunk of a row's keys.
bool decode_attention_mma_fits(int head_dim, int32_t kv_dtype, int num_groups);
int decode_attention_mma_warps_per_sm(int head_dim);  // resident warps of the kernel per SM

// attention_prefill.cu: the rows of step.prefill_tiles on the tensor cores (bf16 entries, head_dim a
// multiple of 32, no selection stores); prefill_tile_rows() query rows per tile.
bool prefill_attention_fits(int head_dim, int32_t kv_dtype, int num_groups);
int prefill_tile_rows();
void prefill_attention(const DeviceStep& step, const AttentionLaunch& launch, const float* q, const int32_t* tiles,
                       int64_t num_tiles, cudaStream_t stream);
// sm90a/attention_prefill_wgmma.cu: the same rows on Hopper's warpgroup MMA (sm_90a code), where the
// device is compute capability 9.0, head_dim 128 and 4 | query heads per KV head; prefill_attention
// takes it there unless PODKV_CUDA_PREFILL_WGMMA=0, in the form its switches choose
// (attention_prefill.cu: prefill_variant).
struct WgmmaPrefill {
  int groups = 2;         // computing warpgroups per block (PODKV_CUDA_PREFILL=G,U)
  bool uniform = true;    // tiles every row reads whole, of one class, skip the masks (U)
  bool producer = true;   // two groups: with a copying warpgroup, sm90a/attention_prefill_producer.cu
                          // (PODKV_CUDA_PREFILL_PRODUCER=0: the lockstep block)
  int step_keys = 64;     // the copying kernel's keys per step, 64 or 128 (PODKV_CUDA_PREFILL_STEP)
};
bool prefill_wgmma_fits(int head_dim, int query_heads_per_kv_head);
void prefill_wgmma(const DeviceStep& step, const AttentionLaunch& launch, const float* q, const int32_t* tiles,
                   int64_t num_tiles, const WgmmaPrefill& how, cudaStream_t stream);

}  // namespace podkv::cuda
