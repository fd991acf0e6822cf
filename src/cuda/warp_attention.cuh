// One warp's flash attention on the tensor cores (mma.sync m16n8k16, bf16 in,
// float32 accumulation) over bf16 KV entries read straight from the paged
// pool into registers: no shared memory, no block barriers, so the decode and
// prefill kernels run warps as independent workers.
//
// The warp owns 16 query rows (the mma's M): a decode row's query heads of
// one KV head (GQA/MQA), or 16 positions of one head in prefill. Per tile of
// 16 keys:
//   S[16 x 16] = Q Kᵀ       two n-blocks of 8 keys, D/16 k-steps each
//   online softmax per row  maxima in log2 units (Q is pre-scaled by
//                           scale * log2(e)), the proximal and distant masses
//                           apart (PoD's gate)
//   O[16 x D] += P V        one k-step, D/8 n-blocks
// Fragment layouts (PTX ISA, mma.m16n8k16): lane = 4 g + c holds
//   A: (row g | g+8, cols 2c, 2c+1 | 2c+8, 2c+9);  B: (rows 2c, 2c+1 | 2c+8, 2c+9, col g);
//   C: (row g | g+8, cols 2c, 2c+1).
// A dot product's terms can be summed in any order, so for S the k-th column
// of the mma is not element k of the head: lane c reads 16 contiguous bytes
// of its key (elements 32j + 8c .. 32j + 8c + 7, j < D/32) and Q's fragments
// are built with the same map (step s uses elements 32(s/2) + 8c + 4(s%2) + 0..3).
// For P V, lane (g, c) reads 16 bytes of value rows 2c, 2c+1, 2c+8, 2c+9 at
// elements 8g + 64h (h < D/64 rounded up), so output n-block 8h + i holds, in
// its logical column n, element 8(n + 8h) + i of the head.
// kExact splits Q and P into bf16 hi + lo parts (two mmas each): scores and
// weights to about 2^-17 relative, the float32 kernels' accuracy for bf16 KV.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace podkv::cuda {

__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x on the special function unit (2^-inf = 0, ~2 ulp): the scores are bounded, so the
// approximation is far inside bf16's rounding and within the exact kernels' 2^-17.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// bf16x2 of (lo, hi): lo in the low half, as the mma reads a pair of consecutive columns.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The parts of x - bf16(x) rounded again (lo of a hi + lo split).
__device__ __forceinline__ uint32_t pack_bf16x2_rest(float lo, float hi, uint32_t packed) {
  const float rlo = lo - __uint_as_float(packed << 16), rhi = hi - __uint_as_float(packed & 0xffff0000u);
  return pack_bf16x2(rlo, rhi);
}

template <int D, bool kExact>
struct WarpAttention {
  static_assert(D % 32 == 0 && D <= 128, "head_dim a multiple of 32 up to 128");
  static constexpr int kSteps = D / 16;            // k-steps of Q Kᵀ
  static constexpr int kKeyChunks = D / 32;        // 16-byte loads per key row and lane
  static constexpr int kValueHalves = (D + 63) / 64;
  static constexpr int kOutBlocks = 8 * kValueHalves;
  static constexpr int kParts = kExact ? 2 : 1;

  int g = 0, c = 0;                   // lane = 4 g + c
  uint32_t qa[kParts][kSteps][4];     // A fragments of Q (hi, then lo)
  float o[kOutBlocks][4];             // O accumulators
  float m[2], sum_p[2], sum_d[2];     // rows g and g + 8: max (log2 units), this lane's share of the sums

  __device__ __forceinline__ void init(int lane) {
    g = lane / 4, c = lane % 4;
#pragma unroll
    for (int n = 0; n < kOutBlocks; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
#pragma unroll
    for (int r = 0; r < 2; ++r) m[r] = -INFINITY, sum_p[r] = 0.0f, sum_d[r] = 0.0f;
  }

  // Q rows g and g + 8 (float32, D elements; null: a padding row) times `scale` into A fragments.
  __device__ __forceinline__ void load_q(const float* row_g, const float* row_g8, float scale) {
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const int e = 32 * (s / 2) + 8 * c + 4 * (s % 2);
      float lo[4] = {0, 0, 0, 0}, hi[4] = {0, 0, 0, 0};  // rows g, g + 8: elements e .. e + 3
      if (row_g != nullptr) {
        const float4 v = *reinterpret_cast<const float4*>(row_g + e);
        lo[0] = v.x * scale, lo[1] = v.y * scale, lo[2] = v.z * scale, lo[3] = v.w * scale;
      }
      if (row_g8 != nullptr) {
        const float4 v = *reinterpret_cast<const float4*>(row_g8 + e);
        hi[0] = v.x * scale, hi[1] = v.y * scale, hi[2] = v.z * scale, hi[3] = v.w * scale;
      }
      // a0a1: row g, elements e, e+1; a2a3: row g+8; a4a5: row g, e+2, e+3; a6a7: row g+8.
      qa[0][s][0] = pack_bf16x2(lo[0], lo[1]);
      qa[0][s][1] = pack_bf16x2(hi[0], hi[1]);
      qa[0][s][2] = pack_bf16x2(lo[2], lo[3]);
      qa[0][s][3] = pack_bf16x2(hi[2], hi[3]);
      if constexpr (kExact) {
        qa[kParts - 1][s][0] = pack_bf16x2_rest(lo[0], lo[1], qa[0][s][0]);
        qa[kParts - 1][s][1] = pack_bf16x2_rest(hi[0], hi[1], qa[0][s][1]);
        qa[kParts - 1][s][2] = pack_bf16x2_rest(lo[2], lo[3], qa[0][s][2]);
        qa[kParts - 1][s][3] = pack_bf16x2_rest(hi[2], hi[3], qa[0][s][3]);
      }
    }
  }

  // The same in the mma's own column order (kExact = false): step s takes elements 16 s + 2c,
  // 2c + 1 | 2c + 8, 2c + 9, for keys stored in head order (the wgmma prefill kernel).
  __device__ __forceinline__ void load_q_in_order(const float* row_g, const float* row_g8, float scale) {
    static_assert(!kExact, "in-order fragments without the lo parts");
#pragma unroll
    for (int s = 0; s < kSteps; ++s)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int e = 16 * s + 2 * c + 8 * half;
        const float2 a = row_g != nullptr ? *reinterpret_cast<const float2*>(row_g + e) : make_float2(0.0f, 0.0f);
        const float2 b = row_g8 != nullptr ? *reinterpret_cast<const float2*>(row_g8 + e) : make_float2(0.0f, 0.0f);
        qa[0][s][2 * half] = pack_bf16x2(a.x * scale, a.y * scale);
        qa[0][s][2 * half + 1] = pack_bf16x2(b.x * scale, b.y * scale);
      }
  }

  // load_q and load_q_in_order of Q given in bf16, already scaled (split_qkv_rope_kv_write's prompt
  // form: the values those two make of the float32 row): the pairs are the fragments' own.
  __device__ __forceinline__ void load_q_bf16(const uint16_t* row_g, const uint16_t* row_g8) {
    static_assert(!kExact, "without the lo parts");
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const int e = 32 * (s / 2) + 8 * c + 4 * (s % 2);
      const uint2 a = row_g != nullptr ? *reinterpret_cast<const uint2*>(row_g + e) : make_uint2(0, 0);
      const uint2 b = row_g8 != nullptr ? *reinterpret_cast<const uint2*>(row_g8 + e) : make_uint2(0, 0);
      qa[0][s][0] = a.x, qa[0][s][1] = b.x, qa[0][s][2] = a.y, qa[0][s][3] = b.y;
    }
  }
  __device__ __forceinline__ void load_q_bf16_in_order(const uint16_t* row_g, const uint16_t* row_g8) {
    static_assert(!kExact, "without the lo parts");
#pragma unroll
    for (int s = 0; s < kSteps; ++s)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int e = 16 * s + 2 * c + 8 * half;
        qa[0][s][2 * half] = row_g != nullptr ? *reinterpret_cast<const uint32_t*>(row_g + e) : 0u;
        qa[0][s][2 * half + 1] = row_g8 != nullptr ? *reinterpret_cast<const uint32_t*>(row_g8 + e) : 0u;
      }
  }

  // This lane's 16-byte chunks of a key row (null: zeros).
  __device__ __forceinline__ void load_key(const uint8_t* e, uint4 (&k)[kKeyChunks]) const {
#pragma unroll
    for (int j = 0; j < kKeyChunks; ++j)
      k[j] = e != nullptr ? __ldg(reinterpret_cast<const uint4*>(e) + 4 * j + c) : make_uint4(0, 0, 0, 0);
  }

  // This lane's 16-byte chunks of a value row (null, or past the row's end: zeros).
  __device__ __forceinline__ void load_value(const uint8_t* e, uint4 (&v)[kValueHalves]) const {
#pragma unroll
    for (int h = 0; h < kValueHalves; ++h) {
      const int chunk = g + 8 * h;
      v[h] = e != nullptr && 8 * chunk < D ? __ldg(reinterpret_cast<const uint4*>(e) + chunk) : make_uint4(0, 0, 0, 0);
    }
  }

  // s (an n-block of 8 keys, this lane's key is key g of it) = Q Kᵀ. The k-steps' products go to
  // two accumulators by the step's parity (and, with kExact, the lo parts to two more), added at the
  // end: chains of D/32 (or D/16) dependent mmas instead of one of kParts * D/16, which a decode
  // warp (alone on its scheduler at batch 1) waits out mma by mma.
  __device__ __forceinline__ void scores(const uint4 (&k)[kKeyChunks], float (&s)[4]) const {
    float acc[2 * kParts][4];
#pragma unroll
    for (int a = 0; a < 2 * kParts; ++a) acc[a][0] = acc[a][1] = acc[a][2] = acc[a][3] = 0.0f;
#pragma unroll
    for (int st = 0; st < kSteps; ++st) {
      const uint4 w = k[st / 2];
      const uint32_t b0 = st % 2 == 0 ? w.x : w.z, b1 = st % 2 == 0 ? w.y : w.w;
#pragma unroll
      for (int p = 0; p < kParts; ++p) mma_bf16_16816(acc[2 * p + st % 2], qa[p][st], b0, b1);
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[e] = acc[0][e] + acc[1][e];
      if constexpr (kExact) s[e] += acc[2][e] + acc[3][e];
    }
  }

  // The online softmax over NB n-blocks of 8 keys: x[n][e] is S (log2 units, -inf where masked)
  // of n-block n, element e (row g + 8 (e / 2), key 8 n + 2 c + e % 2); `distant` bit 4 n + e marks
  // keys of the distant class. Returns the probabilities in x and rescales O and the sums.
  // The maxima and sums are pairwise (short dependency chains: a warp's softmax is latency-bound in
  // the prefill kernels), and O is rescaled only when some row's maximum grew, which after the first
  // tiles of a long row is rare (the correction is then exactly 1).
  template <int NB>
  __device__ __forceinline__ void softmax(float (&x)[NB][4], uint32_t distant) {
    float correction[2];
    softmax_weights(x, distant, correction);
    rescale(correction);
  }

  // The softmax without O's rescaling, which `rescale` does later: a kernel whose tensor cores may
  // still be adding the previous tile's P V into O computes this tile's weights meanwhile.
  // Up to 128 keys (NB = 16, the wgmma kernel's two tiles at once: 64 distant bits).
  template <int NB>
  using DistantBits = std::conditional_t<(NB > 8), uint64_t, uint32_t>;
  template <int NB>
  __device__ __forceinline__ void softmax_weights(float (&x)[NB][4], DistantBits<NB> distant, float (&correction)[2]) {
    static_assert(NB <= 16, "at most 128 keys per update (64 distant bits)");
    using Bits = DistantBits<NB>;
    constexpr Bits kAll = NB == 16 ? ~Bits{0} : NB == 8 ? Bits{0xffffffffu} : (Bits{1} << (4 * NB)) - 1u;
    // Rows g and g + 8 side by side, each step of both before the next (two independent chains in
    // one basic block: the class test is the tile's, not the row's, so no branch splits them).
    float v[2][2 * NB];
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int n = 0; n < NB; ++n) v[r][2 * n] = x[n][2 * r], v[r][2 * n + 1] = x[n][2 * r + 1];
    float mx[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) mx[r] = reduce<2 * NB>(v[r], [](float a, float b) { return fmaxf(a, b); });
#pragma unroll
    for (int r = 0; r < 2; ++r) mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
#pragma unroll
    for (int r = 0; r < 2; ++r) mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    float m_use[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], mx[r]);
      // With every score so far masked (m_new = -inf), 0 keeps 2^(x - m) = 0 and the correction
      // (of zero sums and outputs) finite.
      m_use[r] = m_new == -INFINITY ? 0.0f : m_new;
      correction[r] = m_new == m[r] ? 1.0f : fast_exp2(m[r] - m_use[r]);
      m[r] = m_new;
    }
#pragma unroll
    for (int n = 0; n < NB; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) x[n][e] = fast_exp2(x[n][e] - m_use[e / 2]);
    float add_p[2] = {0.0f, 0.0f}, add_d[2] = {0.0f, 0.0f};
    // The masses by class: most tiles are of one class, where the bit tests are skipped.
    if ((distant & kAll) == 0u || (distant & kAll) == kAll) {
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int n = 0; n < NB; ++n) v[r][2 * n] = x[n][2 * r], v[r][2 * n + 1] = x[n][2 * r + 1];
      float sum[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) sum[r] = reduce<2 * NB>(v[r], [](float a, float b) { return a + b; });
#pragma unroll
      for (int r = 0; r < 2; ++r) ((distant & kAll) == 0u ? add_p[r] : add_d[r]) = sum[r];
    } else {
#pragma unroll
      for (int n = 0; n < NB; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if ((distant >> (4 * n + e)) & 1u) add_d[e / 2] += x[n][e];
          else add_p[e / 2] += x[n][e];
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      sum_p[r] = sum_p[r] * correction[r] + add_p[r];
      sum_d[r] = sum_d[r] * correction[r] + add_d[r];
    }
  }

  // O *= the corrections of rows g and g + 8 (skipped when both are exactly 1 in every lane).
  __device__ __forceinline__ void rescale(const float (&correction)[2]) {
    if (__any_sync(0xffffffffu, correction[0] != 1.0f || correction[1] != 1.0f)) {
#pragma unroll
      for (int n = 0; n < kOutBlocks; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[n][e] *= correction[e / 2];
    }
  }

  // op over v[0 .. N) as a tree of depth log2(N) (v is overwritten).
  template <int N, typename Op>
  static __device__ __forceinline__ float pairwise(float (&v)[N], Op op) {
#pragma unroll
    for (int w = 1; w < N; w *= 2)
#pragma unroll
      for (int i = 0; i + w < N; i += 2 * w) v[i] = op(v[i], v[i + w]);
    return v[0];
  }

  // op over v[0 .. N): pairwise up to 16 values; beyond, 8 running chains first, which keeps
  // fewer partial results alive (128-key steps hold S, P and O in registers at once).
  template <int N, typename Op>
  static __device__ __forceinline__ float reduce(float (&v)[N], Op op) {
    if constexpr (N <= 16) {
      return pairwise<N>(v, op);
    } else {
      float acc[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = v[i];
#pragma unroll
      for (int i = 8; i < N; ++i) acc[i % 8] = op(acc[i % 8], v[i]);
      return pairwise<8>(acc, op);
    }
  }

  // O += P V for the tile's 16 keys: v[i] holds value row (2c, 2c+1, 2c+8, 2c+9)[i].
  __device__ __forceinline__ void accumulate(const float (&p)[2][4], const uint4 (&v)[4][kValueHalves]) {
    uint32_t pa[kParts][4];
    pa[0][0] = pack_bf16x2(p[0][0], p[0][1]);
    pa[0][1] = pack_bf16x2(p[0][2], p[0][3]);
    pa[0][2] = pack_bf16x2(p[1][0], p[1][1]);
    pa[0][3] = pack_bf16x2(p[1][2], p[1][3]);
    if constexpr (kExact) {
      pa[kParts - 1][0] = pack_bf16x2_rest(p[0][0], p[0][1], pa[0][0]);
      pa[kParts - 1][1] = pack_bf16x2_rest(p[0][2], p[0][3], pa[0][1]);
      pa[kParts - 1][2] = pack_bf16x2_rest(p[1][0], p[1][1], pa[0][2]);
      pa[kParts - 1][3] = pack_bf16x2_rest(p[1][2], p[1][3], pa[0][3]);
    }
#pragma unroll
    for (int h = 0; h < kValueHalves; ++h) {
      const uint32_t w[4][4] = {{v[0][h].x, v[0][h].y, v[0][h].z, v[0][h].w},
                                {v[1][h].x, v[1][h].y, v[1][h].z, v[1][h].w},
                                {v[2][h].x, v[2][h].y, v[2][h].z, v[2][h].w},
                                {v[3][h].x, v[3][h].y, v[3][h].z, v[3][h].w}};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        // Element i of keys (2c, 2c+1) and (2c+8, 2c+9), paired.
        const uint32_t sel = i % 2 == 0 ? 0x5410u : 0x7632u;
        const uint32_t b0 = __byte_perm(w[0][i / 2], w[1][i / 2], sel);
        const uint32_t b1 = __byte_perm(w[2][i / 2], w[3][i / 2], sel);
#pragma unroll
        for (int q = 0; q < kParts; ++q) mma_bf16_16816(o[8 * h + i], pa[q], b0, b1);
      }
    }
  }

  // The sums of rows g and g + 8 over the quad's four lanes (call once, at the end).
  __device__ __forceinline__ void reduce_sums() {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      sum_p[r] += __shfl_xor_sync(0xffffffffu, sum_p[r], 1);
      sum_p[r] += __shfl_xor_sync(0xffffffffu, sum_p[r], 2);
      sum_d[r] += __shfl_xor_sync(0xffffffffu, sum_d[r], 1);
      sum_d[r] += __shfl_xor_sync(0xffffffffu, sum_d[r], 2);
    }
  }

  // The head element and row of accumulator o[n][e] (element >= D: padding).
  __device__ __forceinline__ int out_element(int n, int e) const { return 8 * (2 * c + e % 2 + 8 * (n / 8)) + n % 8; }
  static __device__ __forceinline__ int out_row(int g_, int e) { return g_ + 8 * (e / 2); }
};

}  // namespace podkv::cuda
