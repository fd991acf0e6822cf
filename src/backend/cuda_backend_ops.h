// BackendOps on an NVIDIA GPU (built with PODKV_CUDA=ON): device memory from
// cudaMalloc, every op a kernel of src/cuda on one stream, matmul through a
// GEMV kernel for up to 8 rows and cuBLAS above. Arithmetic is float32 like
// the CPU's (activations, attention, accumulation); what differs is the order
// of the sums, and for BF16 weights with more than 8 rows the activations,
// which the tensor-core GEMM takes rounded to bf16 (about 2^-9 relative).
// The per-step descriptors (view page tables, rules, batch rows) are copied
// to the device by set_step in one upload.
//
// Not in this header: any CUDA type, so that it compiles without the toolkit.
#pragma once

#include <utility>
#include <vector>

#include "backend/backend_ops.h"

namespace podkv {

// True when the CUDA runtime sees at least one device (false when built without CUDA).
bool cuda_device_available();

#if defined(PODKV_HAVE_CUDA)

class CudaBackendOps : public BackendOps {
 public:
  // On device 0; throws Error when there is none.
  CudaBackendOps();
  ~CudaBackendOps() override;
  std::string name() const override { return "cuda"; }

  void* alloc(size_t bytes) override;
  void free(void* ptr) override;
  void upload(void* device_dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* device_src, size_t bytes) override;
  void synchronize() override;
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
  // Qwen3's q and k norms in place on the stacked projection qkv [rows, (heads + 2 kv_heads) * dim],
  // before split_qkv_rope_kv_write: every q and k head RMS-normalized with q_norm / k_norm [dim].
  void head_rms_norm(float* qkv, int64_t rows, int heads, int kv_heads, int dim, const float* q_norm,
                     const float* k_norm, double eps);
  // Whether CudaBackend gives Qwen3's q and k norms to split_qkv_rope_kv_write (its float32 form: one
  // launch) instead of head_rms_norm's launch before it: on unless PODKV_CUDA_QK_NORM_FUSE=0 or
  // set_qk_norm_fusion(false).
  bool qk_norm_fusion() const;
  void set_qk_norm_fusion(bool on);

  // Beyond the interface, for CudaBackend's fused steps (cuda/kernels.h says what each does).
  void add_rms_norm(float* x, const float* residual, const float* weight, int64_t rows, int64_t n, double eps,
                    float* out);
  void silu_mul_rows(const float* gu, int64_t rows, int64_t inter, float* out);
  // SwiGLU's stacked projection w = [gate | up] then silu_mul_rows: out [rows, w.rows / 2]. With the
  // swiglu fusion on, one launch for a decode row of BF16 weights (gemv_swiglu_row); otherwise matmul
  // into `gu` [rows, w.rows], then silu_mul_rows. The same result either way.
  void matmul_swiglu(const WeightMatrix& w, const float* x, int64_t rows, float* gu, float* out);
  // A projection into the residual stream: x [rows, w.rows] += a · wᵀ, then xn = RMSNorm(x) * weight
  // (weight null: the add only). With the norm fusion on, one launch for a decode row of BF16 weights
  // (gemv_residual_norm_row); otherwise matmul into `proj`, then add_rms_norm (or add).
  void matmul_add_rms_norm(const WeightMatrix& w, const float* a, int64_t rows, float* proj, float* x,
                           const float* weight, double eps, float* xn);
  // A decode row's layer after attention in one persistent launch (cuda::decode_chain): x += o(attn);
  // h = SwiGLU of RMSNorm(x) * mlp_norm; x += down(h); then, with `next` (the next layer's stacked
  // q | k | v projection, its bias and attention norm), qkv = next · RMSNorm(x) * next_norm (+ bias).
  // What matmul_add_rms_norm, matmul_swiglu, matmul_add_rms_norm and matmul give, to float32 rounding.
  // False, nothing queued, where it does not apply: rows != 1, the chain fusion off, a weight not
  // BF16, or cuda::decode_chain's own conditions.
  // With next.rope (and the rope fusion on) the chain also does split_qkv_rope_kv_write's work for
  // the next layer where it can (one row, bf16 entries: kernels.h's DecodeChain::rope): the same q, k,
  // v and KV entries, and qkv is not written; rope->done says whether it did.
  struct NextRope {
    int layer = 0, heads = 0;
    const int64_t* positions = nullptr;  // [1]
    const float* inv_freq = nullptr;     // [head_dim / 2]
    bool interleaved = false;
    float *q = nullptr, *k = nullptr, *v = nullptr;
    bool done = false;
  };
  struct NextProjection {
    const WeightMatrix* wqkv = nullptr;
    const float* bias = nullptr;
    const float* norm = nullptr;
    NextRope* rope = nullptr;
  };
  bool decode_chain(const WeightMatrix& wo, const WeightMatrix& w_gate_up, const WeightMatrix& w_down,
                    const float* mlp_norm, const NextProjection& next, double eps, int64_t rows, const float* attn,
                    float* x, float* h, float* qkv);
  // Chains queued by decode_chain so far, and those that did the next layer's RoPE and KV write (a
  // replayed graph adds none): for tests.
  int64_t decode_chain_launches() const;
  int64_t decode_chain_rope_launches() const;
  // Whether the fused forms above are taken: swiglu and chain on, norm off by default. Timed one at a
  // time on the H200 (2026-12-03, batch-1 decode of the Llama-3-8B shape at 4K, interleaved with the
  // default of then, both off: 167.8-169.4 tok/s): swiglu 170.7-172.1, norm 162.8-163.3. The chain
  // (decode_chain, which takes the layer's o, gate | up and down where it applies), session 27, with
  // swiglu on in both: 196.1 and 194.2 tok/s at 4K against 183.6 and 183.7 without it.
  // rope: the chain's RoPE and KV write (decode_chain's next.rope), on by default: session 31, on an
  // H100, 155.3 tok/s at 4K against 153.8 without it (125.3 against 124.1 at 32K).
  // PODKV_CUDA_DECODE_FUSE names the ones to use ("swiglu", "norm", "chain", "rope", joined by commas;
  // "none": none), a knob for timing them (scripts/tuning_gpu.sh SETTINGS).
  void set_decode_fusions(bool swiglu, bool norm, bool chain, bool rope = true);
  // The bf16 prompt path: for prompt rows (more than cuda::kGemvMaxRows) of BF16 weights the GEMMs
  // take their input as bf16 from one staging buffer, which the op before writes straight away
  // (no float32 copy in memory, no separate rounding pass), and the projections into the residual
  // stream add to it inside the GEMM (beta = 1). Per layer: stage_rms_norm, matmul_staged (q, k, v),
  // attention, stage_rows (its output), matmul_staged_add (o), stage_rms_norm, matmul_staged_bf16
  // (gate | up, bf16 out), stage_swiglu, matmul_staged_add (down), stage_rms_norm (the next layer's).
  // The same values as matmul, add_rms_norm and silu_mul_rows, which round the GEMM input to bf16
  // too, except that gate | up is rounded to bf16 before the product (as bf16 inference engines
  // do; about 2^-9 relative). On unless PODKV_CUDA_PREFILL_FUSE=0 or set_prompt_bf16_path(false).
  bool prompt_bf16_path(int64_t rows) const;
  void set_prompt_bf16_path(bool on);
  // Staging: bf16(RMSNorm(x) * weight) [rows, n]; bf16(a) [rows, cols]; bf16(silu(gate) * up)
  // [rows, inter] from gu [rows, 2 inter] = [gate | up] in bf16.
  void stage_rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, double eps);
  void stage_rows(const float* a, int64_t rows, int64_t cols);
  void stage_swiglu(const uint16_t* gu, int64_t rows, int64_t inter);
  // attention() whose output is staged as stage_rows would stage it (the same bf16 bytes), written
  // by the prefill kernels themselves: no float32 output in memory and no rounding pass (a prompt
  // chunk of 4096 rows of the Llama-3-8B shape: 64 MB read and 32 MB written less per layer). Only
  // where every row of the step is a prompt row of the tensor-core prefill kernels; true if it
  // staged, false if it ran as attention() (outputs.out written, the caller stages it). On unless
  // PODKV_CUDA_PREFILL_STAGE_ATTENTION=0 or set_attention_staging(false); staged_attention_launches
  // counts the staged calls (for tests).
  // q_bf16 (not null): Q as split_qkv_rope_kv_write's prompt form wrote it, which only
  // prompt_q_bf16's steps may pass (an Error otherwise).
  bool attention_staged(const AttentionParams& params, const float* q, const AttentionOutputs& outputs,
                        const uint16_t* q_bf16 = nullptr);
  void set_attention_staging(bool on);
  bool attention_staging() const;
  int64_t staged_attention_launches() const;
  // Whether the step's attention for num_heads query heads may take Q in bf16 from the RoPE kernel
  // (split_qkv_rope_kv_write's q_bf16): every row a prompt row of the tensor-core prefill kernels,
  // whose Q fragments are those bf16 values. On unless PODKV_CUDA_PREFILL_Q_BF16=0 or
  // set_prompt_q_bf16(false); bf16_q_attention_launches counts the attention calls that took it.
  bool prompt_q_bf16(int num_heads) const;
  void set_prompt_q_bf16(bool on);
  int64_t bf16_q_attention_launches() const;
  // The staged input [rows, w.cols] times wᵀ (w BF16): y = that (+ bias) in float32; y = that in
  // bf16; x += that (float32, in the GEMM).
  void matmul_staged(const WeightMatrix& w, int64_t rows, float* y, const float* bias);
  void matmul_staged_bf16(const WeightMatrix& w, int64_t rows, uint16_t* y);
  void matmul_staged_add(const WeightMatrix& w, int64_t rows, float* x);
  void split_qkv_rope(const float* qkv, int64_t rows, int heads, int kv_heads, int dim, const int64_t* positions,
                      const float* inv_freq, bool interleaved, float* q, float* k, float* v);
  // split_qkv_rope, then kv_write(layer, k, v) of the step set last, in one launch. With q_bf16 (the
  // prompt form, for attention_staged where prompt_q_bf16 holds): bf16(rotated q * q_scale)
  // [rows, heads * dim] there, and no float32 q, k or v (the same entries); there qkv_bf16 says that
  // qkv holds the projection in bf16 (matmul_staged_bf16's output) instead of float32. q_norm and
  // k_norm [dim] (Qwen3, float32 form only): head_rms_norm's work in the same launch, the same values.
  void split_qkv_rope_kv_write(int layer, const float* qkv, int64_t rows, int heads, int kv_heads, int dim,
                               const int64_t* positions, const float* inv_freq, bool interleaved, float* q, float* k,
                               float* v, uint16_t* q_bf16 = nullptr, float q_scale = 1.0f, bool qkv_bf16 = false,
                               const float* q_norm = nullptr, const float* k_norm = nullptr, double norm_eps = 0.0);
  // Whether prompt steps whose Q goes to the prefill kernels in bf16 also take q | k | v from their
  // GEMM in bf16 (projections without a bias): rounded once more before RoPE (about 2^-9 relative,
  // as bf16 engines and transformers in bf16 round them), 50 MB less written and read per layer of
  // a 4,096-row chunk of the Llama-3-8B shape. An experiment, off unless PODKV_CUDA_PREFILL_QKV_BF16=1
  // or set_prompt_qkv_bf16(true).
  bool prompt_qkv_bf16() const;
  void set_prompt_qkv_bf16(bool on);
  // The cudaStream_t every op runs on (as void*: this header has no CUDA types), for helpers
  // that launch kernels of their own (cuda_sampler.h).
  void* stream() const;
  // Zeroes device memory (queued).
  void fill_zero(void* device_ptr, size_t bytes);
  // Fills n bf16 values with uniform random ones in [-bound, bound) (queued; a hash of seed and index).
  void fill_random_bf16(void* device_ptr, int64_t n, uint64_t seed, float bound);
  // Free and total device memory in bytes.
  void memory_info(size_t& free_bytes, size_t& total_bytes) const;
  std::string device_name() const;
  // Per-op timing (podkv bench --profile): while enabled, ProfileScope records CUDA events
  // around a region of queued work; profile() synchronises and returns milliseconds per region
  // name, summed since the last reset. Disabled, a scope costs nothing.
  void set_profiling(bool on);
  void profile_begin(const char* name);
  void profile_end();
  std::vector<std::pair<std::string, double>> profile();
  // Same-run references for benchmarks: device-to-device copy of `bytes` (GB/s counting
  // the bytes read and written, the best of `repetitions`), and a bf16 GEMM n x n x n
  // through cuBLAS with float32 accumulation (TFLOP/s, best of `repetitions`).
  double measure_copy_gbs(size_t bytes, int repetitions);
  double measure_bf16_gemm_tflops(int n, int repetitions);

  // CUDA graphs of whole steps, kept per step key (kMaxGraphs of them, the least recently used
  // goes first): a server's batch changes size as requests come and go, and each size it returns
  // to replays its graph. Between begin_capture() and end_capture(key) the queued work is
  // recorded, not run (no call may synchronize: buffers must already have their size);
  // run_graph(key) queues the graph of that key. abort_capture() ends a failed capture and drops it.
  static constexpr size_t kMaxGraphs = 8;
  bool profiling() const;
  void begin_capture();
  void end_capture(const std::string& key);
  void abort_capture();
  bool has_graph(const std::string& key) const;
  void run_graph(const std::string& key);
  // What the arguments of the step's kernels depend on beyond the device arrays' contents: the
  // step descriptor (sizes, device pointers) and the attention launch choices for num_heads.
  // Two steps with equal keys can replay one graph.
  std::string step_key(int num_heads) const;
  // The attention statistics of one launch (counted on the host from the positions and rules;
  // attention() adds them itself, a replayed graph does not).
  void count_attention_stats(const AttentionParams& params, AttentionStats& stats) const;

 private:
  // buffer with room for `floats` (grown, after the queued work, when it has less).
  float* grow(float*& buffer, size_t& capacity, size_t floats, const char* what);
  // The bf16 GEMM input scratch with room for `elems` values (grown, after the queued work).
  uint16_t* bf16_scratch(int64_t elems);
  // attention() and attention_staged(): stage, where it applies, writes the output into the staging
  // buffer in bf16 instead of outputs.out; returns whether it did.
  bool run_attention(const AttentionParams& params, const float* q, const AttentionOutputs& outputs, bool stage,
                     const uint16_t* q_bf16);
  // Every row of the step a prompt row of the tensor-core prefill kernels (for num_heads query heads).
  bool prefill_rows_only(int num_heads) const;
  // y [rows, w.rows] = a [rows, w.cols] · wᵀ + beta y on the tensor cores: a bf16, w BF16, y float32
  // (beta 0 or 1) or bf16 (y_type CUDA_R_16BF as an int: this header has no CUDA types; beta 0).
  void gemm_bf16(const WeightMatrix& w, const uint16_t* a, int64_t rows, void* y, int y_type, float beta);
  void check_staged(const WeightMatrix& w, int64_t rows, const char* what) const;

  struct State;  // the stream, cuBLAS, scratch and the step's device arrays
  std::unique_ptr<State> state_;
  KvView view_;  // host copies of the step's descriptors (stats are counted on the host)
  AttentionBatch batch_;
  bool has_step_ = false;
  int64_t max_keys_ = 1;  // the longest row's key count
  // Decode attention's chunks per row (0: the one-block-per-query kernel, for scored rows).
  int decode_splits(int num_heads, bool scored) const;
  bool scored_rows() const;  // whether some row adds selection scores
};

// Times the work queued during its lifetime under `name` (when profiling is on).
class ProfileScope {
 public:
  ProfileScope(CudaBackendOps& ops, const char* name) : ops_(ops) { ops_.profile_begin(name); }
  ~ProfileScope() { ops_.profile_end(); }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  CudaBackendOps& ops_;
};

#endif

}  // namespace podkv
