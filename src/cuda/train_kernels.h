// Launchers of the training kernels (train_*.cu beside this), called by
// podkv::train::CudaTrainer. They mirror src/train/ops.h on device buffers of
// float32 (the CPU ops are their test oracle): forward and backward of each
// op, backward functions ACCUMULATE into gradients (+=) as on the CPU, a null
// gradient means "not needed". Shapes: n = tokens (batch · seq) rows.
// Every launcher runs on `stream` and throws Error when the launch fails.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace podkv::cuda::train {

// ---- train_layers.cu ----

// out[n, dim] = table[tokens[i], :];  dtable[tokens[i], :] += dout[i, :] (atomic adds).
void embedding_forward(const float* table, const int32_t* tokens, int64_t n, int64_t dim, float* out,
                       cudaStream_t stream);
void embedding_backward(const float* dout, const int32_t* tokens, int64_t n, int64_t dim, float* dtable,
                        cudaStream_t stream);

// RMSNorm: y = x · r · w, r [n] = 1 / sqrt(mean(x²) + eps) saved for the backward.
// y16 (optional): y in bf16 as well (y may then be null): the input of bf16 products.
void rmsnorm_forward(const float* x, const float* w, int64_t n, int64_t dim, double eps, float* y, float* r,
                     cudaStream_t stream, uint16_t* y16 = nullptr);
// dx += r·dy·w − r³·x·(Σ dy·w·x)/dim. dweight (optional) += Σ_rows dy·x·r through
// `scratch` (column_scratch_floats(n, dim) floats), summed in a fixed order.
void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* r, int64_t n, int64_t dim,
                      float* dx, float* dweight, float* scratch, cudaStream_t stream);
// out[dim] += Σ_rows a[n, dim] (bias gradients), deterministic, through `scratch`.
size_t column_scratch_floats(int64_t n, int64_t dim);
void column_sums(const float* a, int64_t n, int64_t dim, float* out, float* scratch, cudaStream_t stream);

// RoPE of x [n, heads, dim] in place; token i has position i % seq; tables cos, sin [seq, dim/2].
// sign = +1 rotates (forward), -1 rotates back (the backward of the orthogonal rotation).
void rope(float* x, int64_t n, int64_t seq, int heads, int dim, const float* cos_table, const float* sin_table,
          bool interleaved, float sign, cudaStream_t stream);

// h = silu(gate) · up;  dgate += dh · up · silu'(gate), dup += dh · silu(gate)
// (with accumulate = false: = instead of +=, which saves clearing them first).
// The bf16 outputs (optional; the float32 ones may then be null) are the inputs
// of bf16 products: h16 = bf16(h); dgate16, dup16 = bf16 of this call's terms
// (with accumulate = false, of dgate and dup).
void swiglu_forward(const float* gate, const float* up, int64_t n, float* h, cudaStream_t stream,
                    uint16_t* h16 = nullptr);
void swiglu_backward(const float* dh, const float* gate, const float* up, int64_t n, float* dgate, float* dup,
                     cudaStream_t stream, bool accumulate = true, uint16_t* dgate16 = nullptr,
                     uint16_t* dup16 = nullptr);
// out[i] = bf16(x[i]) (round to nearest even) over n values: the bf16 operands of the matrix products.
void to_bf16(const float* x, int64_t n, uint16_t* out, cudaStream_t stream);
// out = a + b over n values (the residual stream).
void add(const float* a, const float* b, int64_t n, float* out, cudaStream_t stream);

// ---- train_attention.cu ----
// Attention over materialised scores, a chunk of whole sequences at a time:
// entry e of the chunk is (sequence b0 + bb, query head h) with
// e = (r · nb + bb) · kv_heads + g, h = g · group + r (group = heads / kv_heads),
// so the entries of one r are contiguous (they write distinct KV heads: the
// per-r GEMMs that accumulate into dK, dV have no two entries on one output).
// S1, S2: [entries, seq, seq]. S1 holds the scores against the layer's keys,
// S2 (PoD only) against the anchor's; query t uses the anchor's for key j
// when sink <= j <= t - recent.
struct AttentionChunk {
  int64_t seq = 0, nb = 0, b0 = 0;  // sequences [b0, b0 + nb) of the batch
  int heads = 0, kv_heads = 0, dim = 0;
  int64_t sink = 0, recent = 0;
  bool pod = false;                 // S2 exists and the window applies
  int64_t entries() const { return nb * heads; }
};

// Device pointer arrays for the batched GEMMs of one chunk, entry order as
// above. ka / dka: per KV head g, the anchor layer's keys and their gradient
// (rows of [n, kv_heads, dim]); the pointer arrays k_of[g], dk_of[g] index them.
struct AttentionPointers {
  const float** q = nullptr;   // [entries] rows of q   [n, heads, dim] (ld heads·dim)
  const float** k = nullptr;   // layer's keys           (ld kv_heads·dim)
  const float** ka = nullptr;  // anchor's keys
  const float** v = nullptr;
  float** o = nullptr;         // output [n, heads, dim]
  float** s1 = nullptr;        // [seq, seq] slabs
  float** s2 = nullptr;
  const float** dout = nullptr;
  float** dq = nullptr;
  float** dk = nullptr;
  float** dka = nullptr;
  float** dv = nullptr;
};
// Fills the arrays (device memory, `entries` each). Buffers: q, o, dout, dq [n, heads, dim];
// k, v, dk, dv [n, kv_heads, dim]; anchor_k / anchor_dk: device arrays [kv_heads] of base pointers.
void attention_pointers(const AttentionChunk& c, const float* q, const float* k, const float* const* anchor_k,
                        const float* v, float* o, float* s1, float* s2, const float* dout, float* dq, float* dk,
                        float* const* anchor_dk, float* dv, const AttentionPointers& out, cudaStream_t stream);
// Causal (and PoD-windowed) softmax of the scores in place: P into s1 (0 above
// the diagonal). Forward (recompute = false): lse [entries, seq] written
// (lse of entry e at lse + e · seq); recompute: P = exp(s − lse) from the saved lse.
void attention_softmax(const AttentionChunk& c, float* s1, const float* s2, float* lse, bool recompute,
                       cudaStream_t stream);
// dS = P ⊙ (dP − Σ_d dO·O) · scale, P in s1 and dP in s2 on entry; on exit s1
// holds dS at the layer's keys (proximal) and s2 at the anchor's (distant, PoD).
void attention_dscores(const AttentionChunk& c, float* s1, float* s2, const float* dout, const float* o, float scale,
                       cudaStream_t stream);

// ---- train_flash.cu ----
// Fused attention on the tensor cores (bf16 operands, float32 accumulation),
// head_dim 64 or 128: forward, and the backward as a dQ pass and a dK/dV pass.
// The operands are bf16 in the head-major layout [batch][heads][seq][dim]
// (to_head_major); PoD reads the anchors' keys through anchor_k.
enum class FlashPass { Forward, Dq, Dkv };
struct FlashArgs {
  int64_t batch = 0, seq = 0;
  int heads = 0, kv_heads = 0, dim = 0;
  int64_t sink = 0, recent = 0;                 // PoD window (with anchor_k)
  float scale = 1;                              // of the scores, 1/sqrt(dim)
  const uint16_t* q = nullptr;                  // bf16 [batch][heads][seq][dim]
  const uint16_t* k = nullptr;                  // bf16 [batch][kv_heads][seq][dim]
  const uint16_t* v = nullptr;
  const uint16_t* const* anchor_k = nullptr;    // device [kv_heads]: each head's anchor keys (null = dense)
  const uint16_t* dout = nullptr;               // bf16 like q (backward)
  float* out = nullptr;                         // forward: [batch · seq, heads, dim]
  float* lse = nullptr;                         // [batch][heads][seq], log2 units: forward writes, backward reads
  const float* dot = nullptr;                   // [batch][heads][seq]: Σ dO · O (row_dot)
  float* dq = nullptr;                          // [batch · seq, heads, dim], overwritten
  float* dk = nullptr;                          // [batch · seq, kv_heads, dim], accumulated
  float* dv = nullptr;                          // [batch · seq, kv_heads, dim], overwritten
  float* const* anchor_dk = nullptr;            // device [kv_heads]: the anchors' dk, accumulated
};
bool flash_supported(int head_dim);
void flash_attention(FlashPass pass, const FlashArgs& args, cudaStream_t stream);
// x f32 [batch · seq, heads, dim] -> bf16 [batch][heads][seq][dim] at out.
void to_head_major(const float* x, int64_t batch, int64_t seq, int heads, int dim, void* out, cudaStream_t stream);
// dot[(b · heads + h) · seq + t] = Σ dout · out over the row of (token b · seq + t, head h).
void row_dot(const float* dout, const float* out, int64_t batch, int64_t seq, int heads, int dim, float* dot,
             cudaStream_t stream);

// ---- train_loss.cu ----

// Cross-entropy of logits [rows, vocab] against targets (-1 = no loss):
// stats[0] += Σ loss, stats[1] += counted rows, stats[2] += rows whose
// target is the first argmax (doubles, atomic). With grad, logits becomes
// dlogits = (softmax − onehot) · grad_scale on counted rows, 0 elsewhere.
void cross_entropy(float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float grad_scale, bool grad,
                   double* stats, cudaStream_t stream);

// ---- train_optim.cu ----

// *sum += Σ g² (double, atomic).
void sum_squares(const float* g, int64_t n, double* sum, cudaStream_t stream);
void scale(float* g, int64_t n, float factor, cudaStream_t stream);
// PyTorch's AdamW on one range (as train::AdamW::step): m, v updated, then
// p = p · decay − step_size · m / (sqrt(v) / correction2_sqrt + eps).
struct AdamWStep {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float step_size = 0, correction2_sqrt = 1, decay = 1;
};
void adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s, cudaStream_t stream);

}  // namespace podkv::cuda::train
