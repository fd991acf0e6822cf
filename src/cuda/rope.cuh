// One RoPE rotation on the device, shared by rope.cu's kernels and the fused
// split + RoPE + KV write of kv_write.cu: the angle float32(pos) * inv_freq[i]
// in float32, as transformers computes it; cos, sin and the rotation in double.
#pragma once

#include <cstdint>

namespace podkv::cuda {

// Pair i of one head of `dim` elements: read from `in`, written rotated by position `pos` to
// `out` (may be `in`). Pairs are (i, i + dim / 2), or (2i, 2i + 1) when interleaved.
// The angle's sine and cosine (in double) of pair i at position `pos`.
__device__ __forceinline__ void rope_sincos(int i, int64_t pos, const float* inv_freq, double& s, double& c) {
  const float angle = static_cast<float>(pos) * inv_freq[i];
  sincos(static_cast<double>(angle), &s, &c);
}

// A pair's values (a, b) rotated by an angle of sine s and cosine c (also decode_chain.cu's RoPE
// epilogue: the same arithmetic, the same results).
__device__ __forceinline__ void rotate_values(float& a, float& b, double s, double c) {
  const double va = a, vb = b;
  a = static_cast<float>(va * c - vb * s);
  b = static_cast<float>(vb * c + va * s);
}

// The rotation of pair i by an angle of sine s and cosine c.
__device__ __forceinline__ void rotate_pair_by(const float* in, float* out, int i, int dim, bool interleaved, double s,
                                               double c) {
  const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + dim / 2;
  float va = in[a], vb = in[b];
  rotate_values(va, vb, s, c);
  out[a] = va;
  out[b] = vb;
}

__device__ __forceinline__ void rotate_pair(const float* in, float* out, int i, int dim, int64_t pos,
                                            const float* inv_freq, bool interleaved) {
  double s, c;
  rope_sincos(i, pos, inv_freq, s, c);
  rotate_pair_by(in, out, i, dim, interleaved, s, c);
}

}  // namespace podkv::cuda
