// Small per-token ops of the transformer block (CPU, float32).
#pragma once

#include <cstdint>

namespace podkv {

// out[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) * weight, for t < tokens; x, out [tokens, n].
void rms_norm(const float* x, const float* weight, int64_t tokens, int64_t n, double eps, float* out);

// Rotates each head of x [tokens, heads * dim] in place by position · inv_freq.
// interleaved = false rotates halves (i, i + dim/2), as Hugging Face does;
// true rotates adjacent pairs (2i, 2i + 1), as GGUF llama weights expect.
void apply_rope(float* x, int64_t tokens, int heads, int dim, const int64_t* positions,
                const float* inv_freq, bool interleaved);

// gate[i] = silu(gate[i]) * up[i] for i < n.
void silu_mul(float* gate, const float* up, int64_t n);

}  // namespace podkv
