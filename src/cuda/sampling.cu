// Sampling on the GPU: one block per logits row draws the next token as
// LogitSampler (sampling/sampler.h) does on the CPU, so that only token ids
// cross to the host. The CPU sorts the candidates; here no list is sorted.
// Every step is a question about the best-first order (scaled logit
// descending, token id ascending) answered by block-wide counting:
//  - top-k: the k-th largest logit, by a radix select over an order-preserving
//    32-bit key of each float (4 rounds of 8 bits, counts);
//  - top-p and the draw: the shortest best-first prefix whose probability mass
//    reaches a target, by the same radix descent over masses, then among the
//    tokens tied at the boundary key (same logit, same weight) the m-th by id;
//  - without top-k and top-p the CPU walks the candidates by id, so does the
//    draw here (prefix sums over contiguous id ranges).
// Masses are fixed point (weight * 2^shift in 64-bit integers, the weights
// exp(s) <= 1 as the CPU's float), summed by integer adds: exact, so any order
// gives the same bits, and the result does not depend on scheduling. The CPU
// sums doubles of glibc's expf, the GPU fixed-point truncations of exp in double
// rounded to float: the two can only disagree where a draw or top-p's target lands
// within about 1e-7 (relative) of a boundary between two tokens.
#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;

// Larger key <=> larger float (no NaN here; -0 is folded into +0, which compare equal).
__device__ __forceinline__ uint32_t order_key(float x) {
  if (x == 0.0f) x = 0.0f;
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct Shared {
  unsigned long long hist[256];  // a radix round's masses (or counts) per 8-bit digit
  unsigned long long red[kWarps];
  float red_value[kWarps];
  int red_index[kWarps];
  unsigned long long result;     // what thread 0 or one chosen thread hands to the block
  unsigned long long result2;
  int found;
};

// The set the draw is made from: a best-first prefix (every key > K, and the tokens of key K with
// id <= I), intersected with min-p's w >= min_p when min_p > 0.
struct Members {
  uint32_t K = 0;
  int32_t I = 0x7fffffff;
  float min_p = 0.0f;
  __device__ bool has(int32_t i, uint32_t key, float w) const {
    if (key < K || (key == K && i > I)) return false;
    return min_p <= 0.0f || static_cast<double>(w) >= static_cast<double>(min_p);
  }
};

__device__ unsigned long long block_sum(unsigned long long v, Shared& sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(kFull, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) sh.red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    unsigned long long t = sh.red[lane];
    for (int o = 16; o > 0; o >>= 1) t += __shfl_down_sync(kFull, t, o);
    if (lane == 0) sh.result = t;
  }
  __syncthreads();
  return sh.result;
}

// Exclusive prefix sum of one value per thread, in thread order (for contiguous id ranges).
__device__ unsigned long long block_exclusive_scan(unsigned long long v, Shared& sh) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned long long incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long t = __shfl_up_sync(kFull, incl, o);
    if (lane >= o) incl += t;
  }
  __syncthreads();
  if (lane == 31) sh.red[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const unsigned long long t0 = sh.red[lane];
    unsigned long long t = t0;
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long u = __shfl_up_sync(kFull, t, o);
      if (lane >= o) t += u;
    }
    sh.red[lane] = t - t0;  // exclusive over warps
  }
  __syncthreads();
  return sh.red[warp] + incl - v;
}

// The largest value and, among equal ones, the lowest index (torch.argmax's tie rule).
__device__ void block_argmax(float& value, int& index, Shared& sh) {
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_down_sync(kFull, value, o);
    const int i = __shfl_down_sync(kFull, index, o);
    if (v > value || (v == value && i < index)) value = v, index = i;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) sh.red_value[warp] = value, sh.red_index[warp] = index;
  __syncthreads();
  if (warp == 0) {
    value = sh.red_value[lane];
    index = sh.red_index[lane];
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_down_sync(kFull, value, o);
      const int i = __shfl_down_sync(kFull, index, o);
      if (v > value || (v == value && i < index)) value = v, index = i;
    }
    if (lane == 0) sh.red_value[0] = value, sh.red_index[0] = index;
  }
  __syncthreads();
  value = sh.red_value[0];
  index = sh.red_index[0];
}

__device__ __forceinline__ unsigned long long fixed_weight(float w, double scale) {
  return static_cast<unsigned long long>(static_cast<double>(w) * scale);  // truncates; w <= 1
}

// The largest key v such that the members with key >= v hold at least `target` (their fixed-point
// masses, or with `counting` one each). Returns false when all members hold less. On success
// *above = what the members with key > v hold, *at = what those with key == v hold.
__device__ bool descend(const float* s, const float* w, int32_t V, const Members& m, bool counting, double scale,
                        unsigned long long target, uint32_t* v_out, unsigned long long* above, unsigned long long* at,
                        Shared& sh) {
  uint32_t prefix = 0, mask = 0;
  unsigned long long before = 0;  // held by the members above the digits chosen so far
  const int lane = threadIdx.x % 32;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) sh.hist[b] = 0;
    __syncthreads();
    for (int32_t base = 0; base < V; base += kThreads) {
      const int32_t i = base + static_cast<int32_t>(threadIdx.x);
      bool ok = false;
      uint32_t digit = 0;
      unsigned long long add = 0;
      if (i < V) {
        const uint32_t key = order_key(s[i]);
        const float wi = w[i];
        if ((key & mask) == prefix && m.has(i, key, wi)) {
          ok = true;
          digit = (key >> shift) & 255u;
          add = counting ? 1ull : fixed_weight(wi, scale);
        }
      }
      // A warp whose members share one digit (a flat distribution: most of them) adds once.
      const unsigned oks = __ballot_sync(kFull, ok);
      if (oks == 0) continue;
      const uint32_t d0 = __shfl_sync(kFull, digit, __ffs(oks) - 1);
      if (__all_sync(kFull, !ok || digit == d0)) {
        unsigned long long t = add;
        for (int o = 16; o > 0; o >>= 1) t += __shfl_down_sync(kFull, t, o);
        if (lane == 0 && t > 0) atomicAdd(&sh.hist[d0], t);
      } else if (ok && add > 0) {
        atomicAdd(&sh.hist[digit], add);
      }
    }
    __syncthreads();
    // One warp walks the 256 digits from the top: lane l takes 8 of them.
    if (threadIdx.x < 32) {
      unsigned long long local[8], sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) local[j] = sh.hist[255 - (lane * 8 + j)], sum += local[j];
      unsigned long long incl = sum;
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned long long t = __shfl_up_sync(kFull, incl, o);
        if (lane >= o) incl += t;
      }
      unsigned long long run = before + incl - sum;
      int hit = -1;
      unsigned long long hit_before = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (hit < 0 && run + local[j] >= target) hit = 255 - (lane * 8 + j), hit_before = run;
        run += local[j];
      }
      const unsigned hits = __ballot_sync(kFull, hit >= 0);
      if (hits == 0) {
        if (lane == 0) sh.found = 0;
      } else if (lane == __ffs(hits) - 1) {
        sh.found = 1;
        sh.result = static_cast<unsigned long long>(hit);
        sh.result2 = hit_before;
      }
    }
    __syncthreads();
    if (!sh.found) return false;
    const uint32_t digit = static_cast<uint32_t>(sh.result);
    before = sh.result2;
    *at = sh.hist[digit];
    prefix |= digit << shift;
    mask |= 255u << shift;
    __syncthreads();  // hist is cleared by the next round
  }
  *v_out = prefix;
  *above = before;
  return true;
}

// The id of the n-th (1-based) member with key == v, by id.
__device__ int32_t nth_tied(const float* s, const float* w, int32_t V, const Members& m, uint32_t v, unsigned long long n,
                            Shared& sh) {
  const int32_t chunk = (V + kThreads - 1) / kThreads;
  const int32_t lo = min(V, static_cast<int32_t>(threadIdx.x) * chunk), hi = min(V, lo + chunk);
  unsigned long long count = 0;
  for (int32_t i = lo; i < hi; ++i) {
    const uint32_t key = order_key(s[i]);
    if (key == v && m.has(i, key, w[i])) ++count;
  }
  const unsigned long long before = block_exclusive_scan(count, sh);
  if (threadIdx.x == 0) sh.result = static_cast<unsigned long long>(-1);
  __syncthreads();
  if (before < n && n <= before + count) {
    unsigned long long seen = before;
    for (int32_t i = lo; i < hi; ++i) {
      const uint32_t key = order_key(s[i]);
      if (key == v && m.has(i, key, w[i]) && ++seen == n) {
        sh.result = static_cast<unsigned long long>(i);
        break;
      }
    }
  }
  __syncthreads();
  return static_cast<int32_t>(sh.result);
}

// The shortest best-first prefix of the members that holds at least `target`: its last token
// (key *key_out, id *id_out). False when the members hold less.
__device__ bool best_first_prefix(const float* s, const float* w, int32_t V, const Members& m, double scale,
                                  unsigned long long target, uint32_t* key_out, int32_t* id_out, Shared& sh) {
  uint32_t v = 0;
  unsigned long long above = 0, at = 0;
  if (!descend(s, w, V, m, false, scale, target, &v, &above, &at, sh)) return false;
  // Tokens of one key have one weight (at / their count), so the prefix takes the first n of
  // them by id.
  int32_t count_at = 0;
  {
    unsigned long long c = 0;
    for (int32_t i = threadIdx.x; i < V; i += kThreads) {
      const uint32_t key = order_key(s[i]);
      if (key == v && m.has(i, key, w[i])) ++c;
    }
    count_at = static_cast<int32_t>(block_sum(c, sh));
  }
  const unsigned long long each = at / static_cast<unsigned long long>(count_at);
  const unsigned long long need = target - above;  // > 0, <= at
  unsigned long long n = each > 0 ? (need + each - 1) / each : 1;
  if (n > static_cast<unsigned long long>(count_at)) n = count_at;
  *key_out = v;
  *id_out = nth_tied(s, w, V, m, v, n, sh);
  return true;
}

// The first member by id at which the running mass (in id order) exceeds x.
__device__ int32_t first_by_id_above(const float* s, const float* w, int32_t V, const Members& m, double scale,
                                     unsigned long long x, Shared& sh) {
  const int32_t chunk = (V + kThreads - 1) / kThreads;
  const int32_t lo = min(V, static_cast<int32_t>(threadIdx.x) * chunk), hi = min(V, lo + chunk);
  unsigned long long mass = 0;
  for (int32_t i = lo; i < hi; ++i) {
    const uint32_t key = order_key(s[i]);
    if (m.has(i, key, w[i])) mass += fixed_weight(w[i], scale);
  }
  const unsigned long long before = block_exclusive_scan(mass, sh);
  if (threadIdx.x == 0) sh.result = static_cast<unsigned long long>(-1);
  __syncthreads();
  if (before <= x && x < before + mass) {
    unsigned long long run = before;
    for (int32_t i = lo; i < hi; ++i) {
      const uint32_t key = order_key(s[i]);
      if (!m.has(i, key, w[i])) continue;
      run += fixed_weight(w[i], scale);
      if (run > x) {
        sh.result = static_cast<unsigned long long>(i);
        break;
      }
    }
  }
  __syncthreads();
  return static_cast<int32_t>(sh.result);
}

__global__ void __launch_bounds__(kThreads)
    sample_rows_kernel(const float* logits, int32_t V, const SampleRowArgs* args, const SamplePenaltyArgs* penalties,
                       float* scratch, int32_t* tokens) {
  __shared__ Shared sh;
  const int64_t row = blockIdx.x;
  const SampleRowArgs a = args[row];
  const float* l = logits + row * V;
  float* s = scratch + row * 2 * static_cast<int64_t>(V);  // scaled logits, then their weights
  float* w = s + V;

  // NaN or +inf: the host samples this row again from the logits and reports it.
  int bad = 0;
  for (int32_t i = threadIdx.x; i < V; i += kThreads) {
    const float x = l[i];
    bad |= isnan(x) || x == __int_as_float(0x7f800000);
  }
  if (__syncthreads_or(bad)) {
    if (threadIdx.x == 0) tokens[row] = -1;
    return;
  }

  // The penalised logits (the list holds each token once, so no two threads write one entry).
  const bool penalised = a.penalty_end > a.penalty_begin;
  const float* x = l;
  if (penalised || a.temperature > 0.0f) {
    for (int32_t i = threadIdx.x; i < V; i += kThreads) s[i] = l[i];
    __syncthreads();
    for (int32_t k = a.penalty_begin + threadIdx.x; k < a.penalty_end; k += kThreads) {
      const SamplePenaltyArgs p = penalties[k];
      float v = s[p.token];
      if (p.repeated && a.repetition_penalty != 1.0f) {
        const float o = l[p.token];
        v = o < 0.0f ? __fmul_rn(o, a.repetition_penalty) : __fdiv_rn(o, a.repetition_penalty);
      }
      if (p.count > 0) {
        v = __fsub_rn(v, a.frequency);
        v = __fsub_rn(v, a.presence);
        for (int32_t c = 1; c < p.count; ++c) v = __fsub_rn(v, a.frequency);
      }
      s[p.token] = v;
    }
    __syncthreads();
    x = s;
  }
  float best_value = -__int_as_float(0x7f800000);
  int best = 0x7fffffff;
  for (int32_t i = threadIdx.x; i < V; i += kThreads) {
    const float v = x[i];
    if (v > best_value || (v == best_value && i < best)) best_value = v, best = i;
  }
  block_argmax(best_value, best, sh);
  if (best_value == -__int_as_float(0x7f800000)) {  // every logit -inf: the host reports it
    if (threadIdx.x == 0) tokens[row] = -1;
    return;
  }
  if (a.temperature == 0.0f) {
    if (threadIdx.x == 0) tokens[row] = best;
    return;
  }

  // Shifted so the best is 0, then divided (as the CPU: a tiny temperature cannot overflow);
  // weights exp(s) as the CPU's float (exp in double, rounded once).
  for (int32_t i = threadIdx.x; i < V; i += kThreads) {
    const float v = __fdiv_rn(__fsub_rn(s[i], best_value), a.temperature);
    s[i] = v;
    w[i] = static_cast<float>(exp(static_cast<double>(v)));
  }
  __syncthreads();
  // Fixed point: V weights of at most 1 sum below 2^62.
  int bits = 0;
  while ((1ll << bits) < static_cast<long long>(V)) ++bits;
  const double scale = ldexp(1.0, 62 - bits);

  Members m;  // every token
  m.K = 0;
  m.I = V - 1;
  bool sorted = false;  // whether the CPU would walk the candidates best first
  if (a.top_k > 0 && a.top_k < V) {
    uint32_t v = 0;
    unsigned long long above = 0, at = 0;
    // Counting: the k-th largest key; every token tied with it stays (as transformers).
    descend(s, w, V, m, true, scale, static_cast<unsigned long long>(a.top_k), &v, &above, &at, sh);
    m.K = v;
    m.I = V - 1;
    sorted = true;
  }
  if (a.top_p < 1.0f) {
    unsigned long long z = 0;
    for (int32_t i = threadIdx.x; i < V; i += kThreads) {
      if (m.has(i, order_key(s[i]), w[i])) z += fixed_weight(w[i], scale);
    }
    z = block_sum(z, sh);
    const double t = ceil(static_cast<double>(a.top_p) * static_cast<double>(z));
    const unsigned long long target = t < 1.0 ? 1ull : static_cast<unsigned long long>(t);
    uint32_t key = 0;
    int32_t id = 0;
    if (best_first_prefix(s, w, V, m, scale, target, &key, &id, sh)) m.K = key, m.I = id;
    sorted = true;
  }
  m.min_p = a.min_p;

  // The draw: the first candidate (in the CPU's walk order) at which the running mass exceeds
  // u * total.
  unsigned long long total = 0;
  for (int32_t i = threadIdx.x; i < V; i += kThreads) {
    if (m.has(i, order_key(s[i]), w[i])) total += fixed_weight(w[i], scale);
  }
  total = block_sum(total, sh);
  const double drawn = floor(a.u * static_cast<double>(total));
  unsigned long long at = drawn <= 0.0 ? 0ull : static_cast<unsigned long long>(drawn);
  if (at >= total) at = total - 1;  // total >= the best token's 2^(62 - bits)
  int32_t token = -1;
  if (sorted) {
    uint32_t key = 0;
    if (!best_first_prefix(s, w, V, m, scale, at + 1, &key, &token, sh)) token = -1;
  } else {
    token = first_by_id_above(s, w, V, m, scale, at, sh);
  }
  if (threadIdx.x == 0) tokens[row] = token >= 0 ? token : best;
}

}  // namespace

void sample_rows(const float* logits, int64_t rows, int32_t vocab, const SampleRowArgs* args,
                 const SamplePenaltyArgs* penalties, float* scratch, int32_t* tokens, cudaStream_t stream) {
  if (rows == 0) return;
  sample_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, args, penalties, scratch,
                                                                          tokens);
  check_launch("sample_rows_kernel");
}

}  // namespace podkv::cuda
