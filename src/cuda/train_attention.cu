// Training attention on materialised scores (the GEMMs are cuBLAS, issued by
// CudaTrainer): the pointer arrays of the batched GEMMs, the causal PoD
// softmax with its log-sum-exp, and the score gradient split by key source.
// One warp per score row [seq]; the oracle is train::attention_forward/backward.
#include <cfloat>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/train_kernels.h"

namespace podkv::cuda::train {

namespace {

constexpr int kWarps = 8;

struct Entry {
  int64_t b = 0;  // sequence in the batch
  int h = 0, g = 0;
};

__device__ __forceinline__ Entry entry_of(const AttentionChunk& c, int64_t e) {
  const int group = c.heads / c.kv_heads;
  const int64_t per_r = c.nb * c.kv_heads;
  const int r = static_cast<int>(e / per_r);
  const int64_t rest = e % per_r;
  Entry x;
  x.b = c.b0 + rest / c.kv_heads;
  x.g = static_cast<int>(rest % c.kv_heads);
  x.h = x.g * group + r;
  return x;
}

// Key j of query t reads the anchor's keys (PoD's distant span).
__device__ __forceinline__ bool distant(const AttentionChunk& c, int64_t t, int64_t j) {
  return c.pod && j >= c.sink && j <= t - c.recent;
}

__global__ void pointers_kernel(AttentionChunk c, const float* q, const float* k, const float* const* anchor_k,
                                const float* v, float* o, float* s1, float* s2, const float* dout, float* dq,
                                float* dk, float* const* anchor_dk, float* dv, AttentionPointers out) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= c.nb * c.heads) return;
  const Entry x = entry_of(c, e);
  const int64_t qd = static_cast<int64_t>(c.heads) * c.dim, kvd = static_cast<int64_t>(c.kv_heads) * c.dim;
  const int64_t q_off = x.b * c.seq * qd + static_cast<int64_t>(x.h) * c.dim;
  const int64_t k_off = x.b * c.seq * kvd + static_cast<int64_t>(x.g) * c.dim;
  const int64_t s_off = e * c.seq * c.seq;
  out.q[e] = q + q_off;
  out.k[e] = k + k_off;
  out.ka[e] = anchor_k != nullptr ? anchor_k[x.g] + k_off : k + k_off;
  out.v[e] = v + k_off;
  out.o[e] = o + q_off;
  out.s1[e] = s1 + s_off;
  out.s2[e] = s2 != nullptr ? s2 + s_off : nullptr;
  out.dout[e] = dout != nullptr ? dout + q_off : nullptr;
  out.dq[e] = dq != nullptr ? dq + q_off : nullptr;
  out.dk[e] = dk != nullptr ? dk + k_off : nullptr;
  out.dka[e] = anchor_dk != nullptr ? anchor_dk[x.g] + k_off : nullptr;
  out.dv[e] = dv != nullptr ? dv + k_off : nullptr;
}

// Warp per (entry, row t). Keys j <= t: the score from s1 or (distant) s2.
__global__ void softmax_kernel(AttentionChunk c, float* s1, const float* s2, float* lse, bool recompute) {
  const int lane = threadIdx.x % 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t e = blockIdx.y;
  if (t >= c.seq) return;
  float* row = s1 + (e * c.seq + t) * c.seq;
  const float* row2 = s2 != nullptr ? s2 + (e * c.seq + t) * c.seq : nullptr;
  auto score = [&](int64_t j) { return distant(c, t, j) ? row2[j] : row[j]; };
  float* l = lse + e * c.seq + t;
  float m;
  if (recompute) {
    m = *l;
  } else {
    float mx = -FLT_MAX;
    for (int64_t j = lane; j <= t; j += 32) mx = fmaxf(mx, score(j));
    mx = warp_max(mx);
    float sum = 0;
    for (int64_t j = lane; j <= t; j += 32) sum += expf(score(j) - mx);
    sum = warp_sum(sum);
    m = mx + logf(sum);
    if (lane == 0) *l = m;
  }
  for (int64_t j = lane; j < c.seq; j += 32) row[j] = j <= t ? expf(score(j) - m) : 0.0f;
}

__global__ void dscores_kernel(AttentionChunk c, float* s1, float* s2, const float* dout, const float* o, float scale) {
  const int lane = threadIdx.x % 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t e = blockIdx.y;
  if (t >= c.seq) return;
  const Entry x = entry_of(c, e);
  const int64_t row_off = ((x.b * c.seq + t) * c.heads + x.h) * c.dim;
  float dot = 0;
  for (int i = lane; i < c.dim; i += 32) dot += dout[row_off + i] * o[row_off + i];
  dot = warp_sum(dot);
  float* p = s1 + (e * c.seq + t) * c.seq;
  float* dp = s2 + (e * c.seq + t) * c.seq;
  for (int64_t j = lane; j < c.seq; j += 32) {
    const float ds = j <= t ? p[j] * (dp[j] - dot) * scale : 0.0f;
    const bool far = distant(c, t, j);
    p[j] = far ? 0.0f : ds;
    dp[j] = far ? ds : 0.0f;
  }
}

dim3 row_grid(const AttentionChunk& c) {
  return dim3(static_cast<unsigned>((c.seq + kWarps - 1) / kWarps), static_cast<unsigned>(c.entries()));
}

}  // namespace

void attention_pointers(const AttentionChunk& c, const float* q, const float* k, const float* const* anchor_k,
                        const float* v, float* o, float* s1, float* s2, const float* dout, float* dq, float* dk,
                        float* const* anchor_dk, float* dv, const AttentionPointers& out, cudaStream_t stream) {
  const int64_t n = c.entries();
  if (n == 0) return;
  pointers_kernel<<<static_cast<unsigned>((n + 127) / 128), 128, 0, stream>>>(c, q, k, anchor_k, v, o, s1, s2, dout,
                                                                              dq, dk, anchor_dk, dv, out);
  check_launch("attention pointers_kernel");
}

void attention_softmax(const AttentionChunk& c, float* s1, const float* s2, float* lse, bool recompute,
                       cudaStream_t stream) {
  if (c.entries() == 0) return;
  softmax_kernel<<<row_grid(c), kWarps * 32, 0, stream>>>(c, s1, c.pod ? s2 : nullptr, lse, recompute);
  check_launch("attention softmax_kernel");
}

void attention_dscores(const AttentionChunk& c, float* s1, float* s2, const float* dout, const float* o, float scale,
                       cudaStream_t stream) {
  if (c.entries() == 0) return;
  dscores_kernel<<<row_grid(c), kWarps * 32, 0, stream>>>(c, s1, s2, dout, o, scale);
  check_launch("attention dscores_kernel");
}

}  // namespace podkv::cuda::train
