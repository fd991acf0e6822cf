// The ops of a Llama-family transformer for training on the CPU, each with its
// forward and its backward together, on plain row-major buffers.
//
// This is the exact reference the CUDA training code will be tested against:
// every op is templated on the scalar type and instantiated for float (what
// training runs in) and double (what the finite-difference gradient checks run
// in). Backward functions ACCUMULATE into their gradient outputs (+=), so a
// residual stream, a tied embedding or a PoD anchor's keys can collect
// gradients from several places; callers zero them once. A null gradient
// pointer means "not needed" (a frozen weight, or an input with no gradient).
//
// Shapes: n = tokens (batch · seq), rows of every activation are tokens.
#pragma once

#include <cstdint>
#include <vector>

namespace podkv::train {

// C[m, n] = alpha · op(A) · op(B) + beta · C, row-major; op = transpose when
// trans_*. OpenBLAS sgemm / dgemm.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Embedding. out[n, dim] = table[tokens[i], :].
template <typename T>
void embedding_forward(const T* table, const int32_t* tokens, int64_t n, int64_t dim, T* out);
// dtable[tokens[i], :] += dout[i, :].
template <typename T>
void embedding_backward(const T* dout, const int32_t* tokens, int64_t n, int64_t dim, T* dtable);

// Linear. y[n, out] = x[n, in] · W[out, in]ᵀ (+ bias[out]).
template <typename T>
void linear_forward(const T* x, const T* w, const T* bias, int64_t n, int64_t in, int64_t out, T* y);
// dx[n, in] += dy · W;  dw[out, in] += dyᵀ · x;  dbias[out] += Σ_rows dy.
template <typename T>
void linear_backward(const T* dy, const T* x, const T* w, int64_t n, int64_t in, int64_t out, T* dx, T* dw,
                     T* dbias);

// RMSNorm. y[n, dim] = x · r · weight with r[i] = 1 / sqrt(mean(x[i]²) + eps);
// r [n] is saved for the backward. Sum of squares in double, as the inference path.
template <typename T>
void rmsnorm_forward(const T* x, const T* weight, int64_t n, int64_t dim, double eps, T* y, T* r);
// dx[n, dim] += ∂/∂x;  dweight[dim] += Σ_rows dy · x · r.
template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* r, int64_t n, int64_t dim, T* dx,
                      T* dweight);

// RoPE tables for positions 0..seq-1: cos, sin [seq, dim / 2]; the angle is
// position · inv_freq computed in T (in float it is the inference path's angle).
template <typename T>
void rope_tables(const std::vector<float>& inv_freq, int64_t seq, std::vector<T>& cos_table,
                 std::vector<T>& sin_table);
// Rotates x [n, heads, dim] in place; token i has position i % seq. Halves
// (i, i + dim/2) as Hugging Face, or adjacent pairs when interleaved.
template <typename T>
void rope_forward(T* x, int64_t n, int64_t seq, int heads, int dim, const T* cos_table, const T* sin_table,
                  bool interleaved);
// The rotation is orthogonal: the backward rotates dx in place by the inverse angle.
template <typename T>
void rope_backward(T* dx, int64_t n, int64_t seq, int heads, int dim, const T* cos_table, const T* sin_table,
                   bool interleaved);

// Causal attention, dense or PoD (pod-method.md, "Attention of layer l").
// q [batch·seq, heads, dim], k, v [batch·seq, kv_heads, dim]; query head i
// reads KV head i / (heads / kv_heads). For query t, key j <= t is proximal
// when j < sink or j > t - recent and then uses k; otherwise it is distant and
// uses distant_keys[h] (the anchor layer's keys, same layout as k; a null
// array or distant_keys[h] == k is dense attention). One joint softmax, the
// layer's own values. probs [batch, heads, seq, seq] (row t, columns <= t) is
// saved for the backward; out [batch·seq, heads, dim].
struct AttentionShape {
  int64_t batch = 1, seq = 1;
  int heads = 1, kv_heads = 1, dim = 1;
  int64_t sink = 0, recent = 0;  // PoD window; ignored for dense heads
  double scale = 0;              // softmax scale of q·k; 0: 1 / sqrt(dim) (YaRN's is larger)
};
template <typename T>
void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* const* distant_keys, const T* v,
                       T* probs, T* out);
// dq += ∂/∂q; dk += gradient of the proximal keys; distant_dkeys[h] += gradient
// of the distant keys (the anchor layer's dk; may equal dk); dv += ∂/∂v.
template <typename T>
void attention_backward(const AttentionShape& s, const T* dout, const T* q, const T* k,
                        const T* const* distant_keys, const T* v, const T* probs, T* dq, T* dk,
                        T* const* distant_dkeys, T* dv);

// SwiGLU. h[n] = silu(gate) · up, elementwise over n values.
template <typename T>
void swiglu_forward(const T* gate, const T* up, int64_t n, T* h);
// dgate += dh · up · silu'(gate);  dup += dh · silu(gate).
template <typename T>
void swiglu_backward(const T* dh, const T* gate, const T* up, int64_t n, T* dgate, T* dup);

// Cross-entropy of logits [n, vocab] against targets [n] (-1 = no loss at that
// row). Returns Σ over counted rows of -log softmax(logits)[target] (in
// double); `correct` (optional) gets how many counted rows have their target
// as argmax. With dlogits non-null, writes (not accumulates)
// dlogits = (softmax - onehot) · grad_scale on counted rows and 0 elsewhere;
// dlogits may be the logits buffer itself.
template <typename T>
double cross_entropy(const T* logits, const int32_t* targets, int64_t n, int64_t vocab, double grad_scale,
                     T* dlogits, int64_t* correct = nullptr);

}  // namespace podkv::train
