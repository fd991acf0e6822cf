#include "train/ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace podkv::train {

// Below this many multiply-adds a loop stays on one thread: small parallel
// regions cost more in OpenMP wake-ups (and spinning on a busy machine) than they save.
constexpr int64_t kParallelWork = int64_t{1} << 17;

template <>
void gemm<float>(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

template <>
void gemm<double>(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                  int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// ---- embedding ----

template <typename T>
void embedding_forward(const T* table, const int32_t* tokens, int64_t n, int64_t dim, T* out) {
  for (int64_t i = 0; i < n; ++i) std::copy_n(table + static_cast<int64_t>(tokens[i]) * dim, dim, out + i * dim);
}

template <typename T>
void embedding_backward(const T* dout, const int32_t* tokens, int64_t n, int64_t dim, T* dtable) {
  for (int64_t i = 0; i < n; ++i) {
    T* row = dtable + static_cast<int64_t>(tokens[i]) * dim;
    const T* g = dout + i * dim;
    for (int64_t j = 0; j < dim; ++j) row[j] += g[j];
  }
}

// ---- linear ----

template <typename T>
void linear_forward(const T* x, const T* w, const T* bias, int64_t n, int64_t in, int64_t out, T* y) {
  gemm<T>(false, true, n, out, in, T(1), x, in, w, in, T(0), y, out);
  if (bias == nullptr) return;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < out; ++j) y[i * out + j] += bias[j];
}

template <typename T>
void linear_backward(const T* dy, const T* x, const T* w, int64_t n, int64_t in, int64_t out, T* dx, T* dw,
                     T* dbias) {
  if (dx != nullptr) gemm<T>(false, false, n, in, out, T(1), dy, out, w, in, T(1), dx, in);
  if (dw != nullptr) gemm<T>(true, false, out, in, n, T(1), dy, out, x, in, T(1), dw, in);
  if (dbias != nullptr)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < out; ++j) dbias[j] += dy[i * out + j];
}

// ---- RMSNorm ----

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, int64_t n, int64_t dim, double eps, T* y, T* r) {
#pragma omp parallel for if (n * dim > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = x + i * dim;
    double ss = 0.0;
    for (int64_t j = 0; j < dim; ++j) ss += static_cast<double>(row[j]) * row[j];
    const T inv = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    r[i] = inv;
    for (int64_t j = 0; j < dim; ++j) y[i * dim + j] = row[j] * inv * weight[j];
  }
}

template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* r, int64_t n, int64_t dim, T* dx,
                      T* dweight) {
  if (dx != nullptr) {
#pragma omp parallel for if (n * dim > kParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      const T* xi = x + i * dim;
      const T* gi = dy + i * dim;
      // y = x·r·w: dx = r·g·w - r³·x·(Σ g·w·x)/dim
      double dot = 0.0;
      for (int64_t j = 0; j < dim; ++j) dot += static_cast<double>(gi[j]) * weight[j] * xi[j];
      const T ri = r[i];
      const T c = static_cast<T>(dot / static_cast<double>(dim)) * ri * ri * ri;
      T* di = dx + i * dim;
      for (int64_t j = 0; j < dim; ++j) di[j] += ri * gi[j] * weight[j] - c * xi[j];
    }
  }
  if (dweight != nullptr)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < dim; ++j) dweight[j] += dy[i * dim + j] * x[i * dim + j] * r[i];
}

// ---- RoPE ----

template <typename T>
void rope_tables(const std::vector<float>& inv_freq, int64_t seq, std::vector<T>& cos_table,
                 std::vector<T>& sin_table) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  cos_table.resize(seq * half);
  sin_table.resize(seq * half);
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const T angle = static_cast<T>(t) * static_cast<T>(inv_freq[i]);
      cos_table[t * half + i] = std::cos(angle);
      sin_table[t * half + i] = std::sin(angle);
    }
}

namespace {

template <typename T>
void rotate(T* x, int64_t n, int64_t seq, int heads, int dim, const T* cos_table, const T* sin_table,
            bool interleaved, T sign) {
  const int half = dim / 2;
#pragma omp parallel for if (n * heads * dim > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const T* c = cos_table + (i % seq) * half;
    const T* s = sin_table + (i % seq) * half;
    for (int h = 0; h < heads; ++h) {
      T* v = x + (i * heads + h) * dim;
      for (int p = 0; p < half; ++p) {
        const int a = interleaved ? 2 * p : p;
        const int b = interleaved ? 2 * p + 1 : p + half;
        const T x0 = v[a], x1 = v[b], sn = sign * s[p];
        v[a] = x0 * c[p] - x1 * sn;
        v[b] = x1 * c[p] + x0 * sn;
      }
    }
  }
}

}  // namespace

template <typename T>
void rope_forward(T* x, int64_t n, int64_t seq, int heads, int dim, const T* cos_table, const T* sin_table,
                  bool interleaved) {
  rotate(x, n, seq, heads, dim, cos_table, sin_table, interleaved, T(1));
}

template <typename T>
void rope_backward(T* dx, int64_t n, int64_t seq, int heads, int dim, const T* cos_table, const T* sin_table,
                   bool interleaved) {
  rotate(dx, n, seq, heads, dim, cos_table, sin_table, interleaved, T(-1));
}

// ---- attention ----

namespace {

// Both directions work per (sequence, query head) on row blocks of kRowBlock
// queries: the block's scores against keys 0..r1-1 are one GEMM (Q·Kᵀ), its
// output one GEMM (P·V), and the backward products dP = dO·Vᵀ, dV += Pᵀ·dO,
// dQ += dS·K and dK += dSᵀ·Q are GEMMs on the same block. Causality costs only
// the triangle of each diagonal block (columns t < j < r1 are masked to 0).
// PoD heads also score the block against the anchor's keys on the columns
// that can be distant for some row of the block (sink <= j <= r1-1-recent) and
// take, position by position, whichever key source the query's window says;
// the backward splits dS the same way into the layer's and the anchor's part.
// OpenMP threads own (sequence, head) tasks and call BLAS single-threaded.
constexpr int64_t kRowBlock = 64;

// Distant columns of query t: [sink, distant_end(t)) (empty when end <= sink).
inline int64_t distant_end(int64_t t, const AttentionShape& s) { return std::min(t, t - s.recent) + 1; }

// Runs BLAS on one thread for its lifetime, so that GEMMs issued from inside
// an OpenMP region do not start OpenBLAS's own pool on top of it.
struct SingleThreadBlas {
  int saved = openblas_get_num_threads();
  SingleThreadBlas() { openblas_set_num_threads(1); }
  ~SingleThreadBlas() { openblas_set_num_threads(saved); }
};

}  // namespace

template <typename T>
void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* const* distant_keys, const T* v,
                       T* probs, T* out) {
  const int group = s.heads / s.kv_heads, d = s.dim;
  const int64_t seq = s.seq;
  const T scale = static_cast<T>(s.scale > 0 ? s.scale : 1.0 / std::sqrt(static_cast<double>(d)));
  const int64_t q_stride = static_cast<int64_t>(s.heads) * d, kv_stride = static_cast<int64_t>(s.kv_heads) * d;
  const bool parallel = s.batch * s.heads * seq * seq * d > kParallelWork;
  SingleThreadBlas blas_guard;
#pragma omp parallel for collapse(2) schedule(dynamic) if (parallel)
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int i = 0; i < s.heads; ++i) {
      const int h = i / group;
      const T* kd = distant_keys != nullptr && distant_keys[h] != nullptr ? distant_keys[h] : k;
      const bool pod = kd != k;
      const int64_t base = b * seq;
      const T* qh = q + base * q_stride + i * d;
      const T* kh = k + base * kv_stride + h * d;
      const T* kdh = kd + base * kv_stride + h * d;
      const T* vh = v + base * kv_stride + h * d;
      T* oh = out + base * q_stride + i * d;
      T* ph = probs + (b * s.heads + i) * seq * seq;
      std::vector<T> sd;  // anchor scores of a block (PoD only)
      for (int64_t r0 = 0; r0 < seq; r0 += kRowBlock) {
        const int64_t r1 = std::min(seq, r0 + kRowBlock), rows = r1 - r0;
        T* pb = ph + r0 * seq;
        gemm<T>(false, true, rows, r1, d, scale, qh + r0 * q_stride, q_stride, kh, kv_stride, T(0), pb, seq);
        const int64_t dcols = pod ? distant_end(r1 - 1, s) - s.sink : 0;  // distant columns [sink, sink + dcols)
        if (dcols > 0) {
          sd.resize(static_cast<size_t>(rows * dcols));
          gemm<T>(false, true, rows, dcols, d, scale, qh + r0 * q_stride, q_stride, kdh + s.sink * kv_stride,
                  kv_stride, T(0), sd.data(), dcols);
        }
        for (int64_t t = r0; t < r1; ++t) {
          T* p = pb + (t - r0) * seq;
          if (dcols > 0) {
            const int64_t end = distant_end(t, s);
            const T* src = sd.data() + (t - r0) * dcols;
            for (int64_t j = s.sink; j < end; ++j) p[j] = src[j - s.sink];
          }
          T max_score = -std::numeric_limits<T>::infinity();
          for (int64_t j = 0; j <= t; ++j) max_score = std::max(max_score, p[j]);
          T sum = 0;
          for (int64_t j = 0; j <= t; ++j) {
            p[j] = std::exp(p[j] - max_score);
            sum += p[j];
          }
          const T inv = T(1) / sum;
          for (int64_t j = 0; j <= t; ++j) p[j] *= inv;
          std::fill(p + t + 1, p + seq, T(0));
        }
        gemm<T>(false, false, rows, d, r1, T(1), pb, seq, vh, kv_stride, T(0), oh + r0 * q_stride, q_stride);
      }
    }
  }
}

template <typename T>
void attention_backward(const AttentionShape& s, const T* dout, const T* q, const T* k,
                        const T* const* distant_keys, const T* v, const T* probs, T* dq, T* dk,
                        T* const* distant_dkeys, T* dv) {
  const int group = s.heads / s.kv_heads, d = s.dim;
  const int64_t seq = s.seq;
  const T scale = static_cast<T>(s.scale > 0 ? s.scale : 1.0 / std::sqrt(static_cast<double>(d)));
  const int64_t q_stride = static_cast<int64_t>(s.heads) * d, kv_stride = static_cast<int64_t>(s.kv_heads) * d;
  const bool parallel = s.batch * s.heads * seq * seq * d > kParallelWork;
  bool any_pod = false;
  for (int h = 0; h < s.kv_heads; ++h)
    any_pod |= distant_keys != nullptr && distant_keys[h] != nullptr && distant_keys[h] != k;
  // Per query head partial gradients of its KV head's keys, values and anchor
  // keys [batch, heads, seq, dim]; summed over each group afterwards, so the
  // tasks of one group never write the same rows.
  const size_t part = static_cast<size_t>(s.batch * s.heads * seq * d);
  std::vector<T> dk_part(part, T(0)), dv_part(part, T(0)), dkd_part(any_pod ? part : 0, T(0));
  {
    SingleThreadBlas blas_guard;
#pragma omp parallel for collapse(2) schedule(dynamic) if (parallel)
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int i = 0; i < s.heads; ++i) {
        const int h = i / group;
        const T* kd = distant_keys != nullptr && distant_keys[h] != nullptr ? distant_keys[h] : k;
        const bool pod = kd != k;
        const int64_t base = b * seq;
        const T* qh = q + base * q_stride + i * d;
        const T* goh = dout + base * q_stride + i * d;
        T* gqh = dq + base * q_stride + i * d;
        const T* kh = k + base * kv_stride + h * d;
        const T* kdh = kd + base * kv_stride + h * d;
        const T* vh = v + base * kv_stride + h * d;
        const T* ph = probs + (b * s.heads + i) * seq * seq;
        const size_t po = static_cast<size_t>((b * s.heads + i) * seq * d);
        T* gk = dk_part.data() + po;
        T* gv = dv_part.data() + po;
        T* gkd = pod ? dkd_part.data() + po : nullptr;
        std::vector<T> ds(static_cast<size_t>(kRowBlock * seq)), dsd;
        for (int64_t r0 = 0; r0 < seq; r0 += kRowBlock) {
          const int64_t r1 = std::min(seq, r0 + kRowBlock), rows = r1 - r0;
          const T* pb = ph + r0 * seq;
          const T* gob = goh + r0 * q_stride;
          const T* qb = qh + r0 * q_stride;
          // dP = dO · Vᵀ (into ds, ld r1);  dV += Pᵀ · dO
          gemm<T>(false, true, rows, r1, d, T(1), gob, q_stride, vh, kv_stride, T(0), ds.data(), r1);
          gemm<T>(true, false, r1, d, rows, T(1), pb, seq, gob, q_stride, T(1), gv, d);
          const int64_t dcols = pod ? distant_end(r1 - 1, s) - s.sink : 0;
          if (dcols > 0) dsd.assign(static_cast<size_t>(rows * dcols), T(0));
          for (int64_t t = r0; t < r1; ++t) {
            const T* p = pb + (t - r0) * seq;
            T* g = ds.data() + (t - r0) * r1;
            T weighted = 0;  // Σ_j p_j · dp_j
            for (int64_t j = 0; j <= t; ++j) weighted += p[j] * g[j];
            for (int64_t j = 0; j <= t; ++j) g[j] = p[j] * (g[j] - weighted) * scale;
            std::fill(g + t + 1, g + r1, T(0));
            if (dcols > 0) {
              const int64_t end = distant_end(t, s);
              T* dst = dsd.data() + (t - r0) * dcols;
              for (int64_t j = s.sink; j < end; ++j) {
                dst[j - s.sink] = g[j];
                g[j] = T(0);
              }
            }
          }
          // dQ += dS · K;  dK += dSᵀ · Q  (and the anchor's part of each)
          gemm<T>(false, false, rows, d, r1, T(1), ds.data(), r1, kh, kv_stride, T(1), gqh + r0 * q_stride,
                  q_stride);
          gemm<T>(true, false, r1, d, rows, T(1), ds.data(), r1, qb, q_stride, T(1), gk, d);
          if (dcols > 0) {
            gemm<T>(false, false, rows, d, dcols, T(1), dsd.data(), dcols, kdh + s.sink * kv_stride, kv_stride,
                    T(1), gqh + r0 * q_stride, q_stride);
            gemm<T>(true, false, dcols, d, rows, T(1), dsd.data(), dcols, qb, q_stride, T(1), gkd + s.sink * d,
                    d);
          }
        }
      }
    }
  }
  // Sum the group's partials into dk, dv and the anchor's dk (which may be dk).
  // Per (sequence, KV head) task: the anchor's rows of head h belong to it alone.
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.kv_heads; ++h) {
      const T* kd = distant_keys != nullptr && distant_keys[h] != nullptr ? distant_keys[h] : k;
      T* dkd = distant_dkeys != nullptr && distant_dkeys[h] != nullptr ? distant_dkeys[h] : dk;
      const bool pod = kd != k;
      for (int i = h * group; i < (h + 1) * group; ++i) {
        const size_t po = static_cast<size_t>((b * s.heads + i) * seq * d);
        for (int64_t t = 0; t < seq; ++t) {
          const int64_t row = (b * seq + t) * kv_stride + h * d;
          const T* pk = dk_part.data() + po + t * d;
          const T* pv = dv_part.data() + po + t * d;
          if (dk != nullptr)
            for (int c = 0; c < d; ++c) dk[row + c] += pk[c];
          if (dv != nullptr)
            for (int c = 0; c < d; ++c) dv[row + c] += pv[c];
          if (pod && dkd != nullptr) {
            const T* pd = dkd_part.data() + po + t * d;
            for (int c = 0; c < d; ++c) dkd[row + c] += pd[c];
          }
        }
      }
    }
  }
}

// ---- SwiGLU ----

template <typename T>
void swiglu_forward(const T* gate, const T* up, int64_t n, T* h) {
#pragma omp parallel for if (n > kParallelWork)
  for (int64_t i = 0; i < n; ++i) h[i] = gate[i] / (T(1) + std::exp(-gate[i])) * up[i];
}

template <typename T>
void swiglu_backward(const T* dh, const T* gate, const T* up, int64_t n, T* dgate, T* dup) {
#pragma omp parallel for if (n > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const T sig = T(1) / (T(1) + std::exp(-gate[i]));
    const T silu = gate[i] * sig;
    dgate[i] += dh[i] * up[i] * sig * (T(1) + gate[i] * (T(1) - sig));
    dup[i] += dh[i] * silu;
  }
}

// ---- cross-entropy ----

template <typename T>
double cross_entropy(const T* logits, const int32_t* targets, int64_t n, int64_t vocab, double grad_scale,
                     T* dlogits, int64_t* correct) {
  double total = 0.0;
  int64_t right = 0;
#pragma omp parallel for reduction(+ : total, right) if (n * vocab > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = logits + i * vocab;
    const int32_t target = targets[i];
    if (target < 0) {
      if (dlogits != nullptr) std::fill_n(dlogits + i * vocab, vocab, T(0));
      continue;
    }
    int64_t best = 0;
    T max_logit = row[0];
    for (int64_t j = 1; j < vocab; ++j)
      if (row[j] > max_logit) max_logit = row[j], best = j;
    double sum = 0.0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(row[j] - max_logit));
    const double log_sum = std::log(sum) + static_cast<double>(max_logit);
    total += log_sum - static_cast<double>(row[target]);
    if (best == target) ++right;
    if (dlogits != nullptr) {
      T* g = dlogits + i * vocab;
      for (int64_t j = 0; j < vocab; ++j)
        g[j] = static_cast<T>(std::exp(static_cast<double>(row[j]) - log_sum) * grad_scale);
      g[target] -= static_cast<T>(grad_scale);
    }
  }
  if (correct != nullptr) *correct = right;
  return total;
}

#define PODKV_TRAIN_OPS(T)                                                                                      \
  template void embedding_forward<T>(const T*, const int32_t*, int64_t, int64_t, T*);                          \
  template void embedding_backward<T>(const T*, const int32_t*, int64_t, int64_t, T*);                         \
  template void linear_forward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*);                \
  template void linear_backward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*, T*, T*);       \
  template void rmsnorm_forward<T>(const T*, const T*, int64_t, int64_t, double, T*, T*);                      \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const T*, int64_t, int64_t, T*, T*);         \
  template void rope_tables<T>(const std::vector<float>&, int64_t, std::vector<T>&, std::vector<T>&);          \
  template void rope_forward<T>(T*, int64_t, int64_t, int, int, const T*, const T*, bool);                     \
  template void rope_backward<T>(T*, int64_t, int64_t, int, int, const T*, const T*, bool);                    \
  template void attention_forward<T>(const AttentionShape&, const T*, const T*, const T* const*, const T*, T*, \
                                     T*);                                                                       \
  template void attention_backward<T>(const AttentionShape&, const T*, const T*, const T*, const T* const*,    \
                                      const T*, const T*, T*, T*, T* const*, T*);                               \
  template void swiglu_forward<T>(const T*, const T*, int64_t, T*);                                            \
  template void swiglu_backward<T>(const T*, const T*, const T*, int64_t, T*, T*);                             \
  template double cross_entropy<T>(const T*, const int32_t*, int64_t, int64_t, double, T*, int64_t*);

PODKV_TRAIN_OPS(float)
PODKV_TRAIN_OPS(double)

}  // namespace podkv::train
