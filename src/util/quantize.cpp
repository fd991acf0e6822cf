// The quantizers of llama.cpp's block formats, as its reference ones (ggml-quants.c,
// quantize_row_*_ref: what llama-quantize runs without an importance matrix) compute them: Q4_0,
// Q4_1, Q5_0 and Q5_1 from each block's extremes; Q2_K to Q6_K with each sub-block's scale (and
// the min of Q2_K, Q4_K and Q5_K) found by a search that minimises a weighted error (Q3_K: a
// refinement of the levels), then the scales quantized against the super-block's largest; IQ4_NL and
// IQ4_XS (non-linear levels) likewise, as llama-quantize's quantize_iq4_nl / _xs compute them. The
// same float32 operations in the same order, so that the bytes equal llama-quantize's
// (tests/test_quantize_llamacpp.cpp checks them against its files). This file is compiled with
// -ffp-contract=off (CMakeLists.txt): a fused multiply-add rounds once where the reference rounds
// twice (Q4_0 differed in 0.1-0.4% of blocks).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>

#include "util/dtype.h"
#include "util/error.h"
#include "util/quant.h"

namespace podkv::quant {
namespace {

// ggml's nearest_int: v rounded half to even by the float adder (exact for |v| < 2^22, which the
// callers' clamped ranges keep).
int nearest_int(float v) {
  const float shifted = v + 12582912.0f;  // 1.5 * 2^23: the integer part lands in the mantissa
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return (bits & 0x007fffff) - 0x00400000;
}

int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// The value of largest magnitude, with its sign (ggml's "max" for the symmetric types).
float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void min_max(const float* x, int n, float& min, float& max) {
  min = FLT_MAX;
  max = -FLT_MAX;
  for (int j = 0; j < n; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
}

// `count` values must be whole blocks of `block` (32, or 256 for the K types).
void check_count(size_t count, const char* who, size_t block = kBlock) {
  check(count % block == 0,
        std::string(who) + ": " + std::to_string(count) + " values is not a multiple of " + std::to_string(block));
}

// make_qkx2_quants: x[0, n) ≈ scale * L + min, L in [0, nmax], min <= 0, fitted by weighted least
// squares for each of nstep + 1 candidate scales (nmax + rmin + rdelta * is) / (max - min); the
// candidate of least weighted error (squared, or absolute with use_mad) wins, against the plain
// min/max fit. Returns the scale; *neg_min = -min; L the winner's levels.
float fit_scale_and_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min, float rmin,
                        float rdelta, int nstep, bool use_mad = false) {
  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_min = -min;
    return 0.0f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * L[i] + min - x[i];
    best_error += w[i] * (use_mad ? std::fabs(diff) : diff * diff);
  }
  uint8_t candidate[kSuperBlock];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
      candidate[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (!(D > 0)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float error = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = this_scale * candidate[i] + this_min - x[i];
      error += w[i] * (use_mad ? std::fabs(diff) : diff * diff);
    }
    if (error < best_error) {
      std::memcpy(L, candidate, static_cast<size_t>(n));
      best_error = error;
      scale = this_scale;
      min = this_min;
    }
  }
  *neg_min = -min;
  return scale;
}

// ggml's GROUP_MAX_EPS: a sub-block whose values are all below it in magnitude quantizes to zero.
constexpr float kGroupMaxEps = 1e-15f;

// The symmetric fits' start: the value of largest magnitude of x[0, n), with its sign; or 0, the
// levels L zeroed, when every value is below kGroupMaxEps in magnitude.
float largest_or_zero_levels(const float* x, int n, int8_t* L) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) >= kGroupMaxEps) return max;
  for (int i = 0; i < n; ++i) L[i] = 0;
  return 0.0f;
}

// make_qx_quants with rmse_type 1 and no importance weights: x[0, n) ≈ scale * (L - nmax), L - nmax
// in [-nmax, nmax - 1], the scale from a least-squares fit weighted by x^2 at the levels of the
// candidate scale -(nmax + 0.1 is) / max, is = -9 .. 9, where max is the value of largest magnitude;
// the fit that explains the most wins. Returns the scale; L the winner's levels (+ nmax).
float fit_symmetric_scale(int n, int nmax, const float* x, int8_t* L) {
  const float max = largest_or_zero_levels(x, n, L);
  if (max == 0) return 0.0f;
  auto fit = [&](float iscale, float& sumlx, float& suml2) {
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
  };
  auto set_levels = [&](float iscale) {
    for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1));
  };
  float iscale = -nmax / max;
  float sumlx, suml2;
  fit(iscale, sumlx, suml2);
  set_levels(iscale);
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    fit(iscale, sumlx, suml2);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      set_levels(iscale);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// make_q3_quants with its refinement: x[0, n) ≈ scale * L, L in [-nmax, nmax - 1], from the levels
// at -nmax / max (max the value of largest magnitude), then up to five passes that move one value's
// level at a time to where it best fits the others' least-squares scale (weights x^2), kept where the
// fit improves. Returns the scale (the final least-squares one); L the levels + nmax.
float fit_symmetric_scale_refined(int n, int nmax, const float* x, int8_t* L) {
  const float max = largest_or_zero_levels(x, n, L);
  if (max == 0) return 0.0f;
  const float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (!(slx > 0)) continue;
      float sl2 = suml2 - w * L[i] * L[i];
      const int new_l = clamp_int(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
      if (new_l == L[i]) continue;
      slx += w * x[i] * new_l;
      sl2 += w * new_l * new_l;
      if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
        L[i] = static_cast<int8_t>(new_l);
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return sumlx / suml2;
}

// The super-block's sixteen 16-value sub-blocks fitted symmetrically by `fit` (levels + nmax into L):
// their scales, the largest magnitude, and (returned) that scale with its sign.
float fit_sub_blocks(const float* x, int nmax, int8_t* L, float (&scales)[16], float& largest,
                     float (*fit)(int, int, const float*, int8_t*)) {
  float max_scale = 0;
  largest = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = fit(16, nmax, x + 16 * j, L + 16 * j);
    if (std::fabs(scales[j]) > largest) {
      largest = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  return max_scale;
}

// Two-bit levels L[0, 256) packed as Q2_K and Q3_K keep them: per 128 values, byte l of the 32 holds
// values l, l + 32, l + 64, l + 96 in bits 0-1, 2-3, 4-5, 6-7.
void pack_two_bits(const uint8_t* L, uint8_t* qs) {
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* v = L + 128 * h;
      qs[32 * h + l] = static_cast<uint8_t>(v[l] | (v[l + 32] << 2) | (v[l + 64] << 4) | (v[l + 96] << 6));
    }
}

}  // namespace

void quantize_q4_0(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q4_0");
  auto* out = reinterpret_cast<BlockQ4_0*>(dst);
  for (size_t b = 0; b < count / kBlock; ++b) {
    const float* x = src + b * kBlock;
    const float d = signed_absmax(x, kBlock) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = f32_to_f16(d);
    for (int j = 0; j < 16; ++j) {
      const int x0 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int x1 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
      out[b].qs[j] = static_cast<uint8_t>(x0 | (x1 << 4));
    }
  }
}

void quantize_q4_1(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q4_1");
  auto* out = reinterpret_cast<BlockQ4_1*>(dst);
  for (size_t b = 0; b < count / kBlock; ++b) {
    const float* x = src + b * kBlock;
    float min, max;
    min_max(x, kBlock, min, max);
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = f32_to_f16(d);
    out[b].m = f32_to_f16(min);
    for (int j = 0; j < 16; ++j) {
      const int x0 = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - min) * id + 0.5f)));
      const int x1 = std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - min) * id + 0.5f)));
      out[b].qs[j] = static_cast<uint8_t>(x0 | (x1 << 4));
    }
  }
}

void quantize_q5_0(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q5_0");
  auto* out = reinterpret_cast<BlockQ5_0*>(dst);
  for (size_t b = 0; b < count / kBlock; ++b) {
    const float* x = src + b * kBlock;
    const float d = signed_absmax(x, kBlock) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const int x0 = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
      const int x1 = std::min(31, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 16.5f)));
      out[b].qs[j] = static_cast<uint8_t>((x0 & 0xF) | ((x1 & 0xF) << 4));
      qh |= static_cast<uint32_t>((x0 & 0x10) >> 4) << j;
      qh |= static_cast<uint32_t>((x1 & 0x10) >> 4) << (j + 16);
    }
    std::memcpy(out[b].qh, &qh, 4);
  }
}

void quantize_q5_1(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q5_1");
  auto* out = reinterpret_cast<BlockQ5_1*>(dst);
  for (size_t b = 0; b < count / kBlock; ++b) {
    const float* x = src + b * kBlock;
    float min, max;
    min_max(x, kBlock, min, max);
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = f32_to_f16(d);
    out[b].m = f32_to_f16(min);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const int x0 = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
      const int x1 = static_cast<uint8_t>((x[j + 16] - min) * id + 0.5f);
      out[b].qs[j] = static_cast<uint8_t>((x0 & 0xF) | ((x1 & 0xF) << 4));
      qh |= static_cast<uint32_t>((x0 & 0x10) >> 4) << j;
      qh |= static_cast<uint32_t>((x1 & 0x10) >> 4) << (j + 16);
    }
    std::memcpy(out[b].qh, &qh, 4);
  }
}

void quantize_q2_k(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q2_k", kSuperBlock);
  auto* out = reinterpret_cast<BlockQ2_K*>(dst);
  for (size_t b = 0; b < count / kSuperBlock; ++b) {
    const float* x = src + b * kSuperBlock;
    BlockQ2_K& y = out[b];
    uint8_t L[kSuperBlock];
    // Each 16-value sub-block as scale * L + min (L 0..3), by the weighted mean absolute error
    // (weights |x|) over 16 candidates from 3 - 0.5; then four-bit scales and mins against the largest.
    float scales[16], mins[16], max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      float weights[16];
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = fit_scale_and_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = 15.0f / max_scale;
      for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
      y.d = f32_to_f16(max_scale / 15.0f);
    } else {
      std::memset(y.scales, 0, sizeof y.scales);
      y.d = f32_to_f16(0.0f);
    }
    if (max_min > 0) {
      const float iscale = 15.0f / max_min;
      for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<uint8_t>(y.scales[j] | (nearest_int(iscale * mins[j]) << 4));
      y.dmin = f32_to_f16(max_min / 15.0f);
    } else {
      y.dmin = f32_to_f16(0.0f);
    }
    // The levels again at the stored scales; a sub-block whose scale rounded to 0 keeps the search's.
    for (int j = 0; j < 16; ++j) {
      const float d = f16_to_f32(y.d) * (y.scales[j] & 0xF);
      if (d == 0) continue;
      const float dm = f16_to_f32(y.dmin) * (y.scales[j] >> 4);
      for (int l = 0; l < 16; ++l) L[16 * j + l] = static_cast<uint8_t>(clamp_int(nearest_int((x[16 * j + l] + dm) / d), 0, 3));
    }
    pack_two_bits(L, y.qs);
  }
}

void quantize_q3_k(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q3_k", kSuperBlock);
  auto* out = reinterpret_cast<BlockQ3_K*>(dst);
  for (size_t b = 0; b < count / kSuperBlock; ++b) {
    const float* x = src + b * kSuperBlock;
    BlockQ3_K& y = out[b];
    int8_t L[kSuperBlock];  // level + 4, 0..7
    float scales[16], amax;
    const float max_scale = fit_sub_blocks(x, 4, L, scales, amax, fit_symmetric_scale_refined);
    // Six-bit signed scales (+ 32) against the largest, which becomes -32: the low four bits of scale
    // j in byte j (j < 8, low nibble) or j - 8 (high nibble), the top two at bits 2 (j / 4) of byte
    // 8 + j % 4.
    std::memset(y.scales, 0, sizeof y.scales);
    if (max_scale != 0) {
      const float iscale = -32.0f / max_scale;
      for (int j = 0; j < 16; ++j) {
        const int l = clamp_int(static_cast<int8_t>(nearest_int(iscale * scales[j])), -32, 31) + 32;
        if (j < 8) y.scales[j] = static_cast<uint8_t>(l & 0xF);
        else y.scales[j - 8] = static_cast<uint8_t>(y.scales[j - 8] | ((l & 0xF) << 4));
        y.scales[8 + j % 4] = static_cast<uint8_t>(y.scales[8 + j % 4] | ((l >> 4) << (2 * (j / 4))));
      }
      y.d = f32_to_f16(1 / iscale);
    } else {
      y.d = f32_to_f16(0.0f);
    }
    // The levels again at the stored scales; a sub-block whose scale is 0 keeps the search's.
    for (int j = 0; j < 16; ++j) {
      const int low = j < 8 ? y.scales[j] & 0xF : y.scales[j - 8] >> 4;
      const int sc = (low | (((y.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
      const float d = f16_to_f32(y.d) * sc;
      if (d == 0) continue;
      for (int l = 0; l < 16; ++l) L[16 * j + l] = static_cast<int8_t>(clamp_int(nearest_int(x[16 * j + l] / d), -4, 3) + 4);
    }
    // The third bit of value j in hmask[j % 32], bit j / 32; the low two bits as Q2_K's.
    std::memset(y.hmask, 0, sizeof y.hmask);
    uint8_t low_bits[kSuperBlock];
    for (int j = 0; j < kSuperBlock; ++j) {
      int v = L[j];
      if (v > 3) {
        y.hmask[j % 32] = static_cast<uint8_t>(y.hmask[j % 32] | (1 << (j / 32)));
        v -= 4;
      }
      low_bits[j] = static_cast<uint8_t>(v);
    }
    pack_two_bits(low_bits, y.qs);
  }
}

namespace {

// The part Q4_K and Q5_K share (quantize_row_q4_K_ref / q5_K_ref): each 32-value sub-block of the
// super-block x fitted as scale * L + min, L in [0, nmax], by fit_scale_and_min over nstep + 1
// candidates from nmax + rmin, weighted by the sub-block's RMS plus each value's magnitude; the
// scales and mins coded in six bits against the largest of each and packed as get_scale_min_k4
// reads them; d and dmin; and the levels L again at the stored scales (a sub-block whose scale
// rounded to 0 keeps the search's).
void fit_k_super_block(const float* x, int nmax, float rmin, int nstep, uint8_t (&L)[kSuperBlock],
                       uint8_t (&packed)[12], uint16_t& d_bits, uint16_t& dmin_bits) {
  float scales[8], mins[8], max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    float weights[32];
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = fit_scale_and_min(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], rmin, 0.1f, nstep);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
    lm[j] = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
    if (ls[j] > 63) ls[j] = 63;
    if (lm[j] > 63) lm[j] = 63;
  }
  for (int k = 0; k < 4; ++k) {
    packed[k] = static_cast<uint8_t>(ls[k] | ((ls[k + 4] >> 4) << 6));
    packed[k + 4] = static_cast<uint8_t>(lm[k] | ((lm[k + 4] >> 4) << 6));
    packed[k + 8] = static_cast<uint8_t>((ls[k + 4] & 15) | ((lm[k + 4] & 15) << 4));
  }
  d_bits = f32_to_f16(max_scale / 63.0f);
  dmin_bits = f32_to_f16(max_min / 63.0f);
  for (int j = 0; j < 8; ++j) {
    const float d = f16_to_f32(d_bits) * ls[j];
    if (d == 0) continue;
    const float dm = f16_to_f32(dmin_bits) * lm[j];
    for (int l = 0; l < 32; ++l)
      L[32 * j + l] = static_cast<uint8_t>(clamp_int(nearest_int((x[32 * j + l] + dm) / d), 0, nmax));
  }
}

}  // namespace

void quantize_q4_k(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q4_k", kSuperBlock);
  auto* out = reinterpret_cast<BlockQ4_K*>(dst);
  for (size_t b = 0; b < count / kSuperBlock; ++b) {
    BlockQ4_K& y = out[b];
    uint8_t L[kSuperBlock];
    fit_k_super_block(src + b * kSuperBlock, 15, -1.0f, 20, L, y.scales, y.d, y.dmin);
    // Per 64 values: byte l holds value l (low nibble) and l + 32 (high).
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) y.qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  }
}

void quantize_q5_k(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q5_k", kSuperBlock);
  auto* out = reinterpret_cast<BlockQ5_K*>(dst);
  for (size_t b = 0; b < count / kSuperBlock; ++b) {
    BlockQ5_K& y = out[b];
    uint8_t L[kSuperBlock];
    fit_k_super_block(src + b * kSuperBlock, 31, -0.5f, 15, L, y.scales, y.d, y.dmin);
    // As Q4_K's nibbles, the fifth bits in qh: bit 2c of qh[l] for value 64c + l, bit 2c + 1 for 64c + 32 + l.
    std::memset(y.qh, 0, sizeof y.qh);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
        y.qs[32 * c + l] = static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
        y.qh[l] = static_cast<uint8_t>(y.qh[l] | ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
  }
}

void quantize_q6_k(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_q6_k", kSuperBlock);
  auto* out = reinterpret_cast<BlockQ6_K*>(dst);
  for (size_t b = 0; b < count / kSuperBlock; ++b) {
    const float* x = src + b * kSuperBlock;
    BlockQ6_K& y = out[b];
    int8_t L[kSuperBlock];  // level + 32, 0..63
    float scales[16], max_abs_scale;
    const float max_scale = fit_sub_blocks(x, 32, L, scales, max_abs_scale, fit_symmetric_scale);
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y, 0, sizeof y);
      continue;
    }
    // Eight-bit scales against the largest, which becomes -128.
    const float iscale = -128.0f / max_scale;
    y.d = f32_to_f16(1 / iscale);
    for (int j = 0; j < 16; ++j) {
      const int s = nearest_int(iscale * scales[j]);
      y.scales[j] = static_cast<int8_t>(s < 127 ? s : 127);
    }
    // The levels again at the stored scales; a sub-block whose scale rounded to 0 keeps the search's.
    for (int j = 0; j < 16; ++j) {
      const float d = f16_to_f32(y.d) * y.scales[j];
      if (d == 0) continue;
      for (int l = 0; l < 16; ++l) L[16 * j + l] = static_cast<int8_t>(clamp_int(nearest_int(x[16 * j + l] / d), -32, 31) + 32);
    }
    // Per half of 128: ql[l] = levels l | l + 64 (low, high nibble), ql[l + 32] = l + 32 | l + 96,
    // qh[l] = the top two bits of l, l + 32, l + 64, l + 96.
    for (int h = 0; h < 2; ++h) {
      const auto* v = reinterpret_cast<const uint8_t*>(L) + 128 * h;
      uint8_t* ql = y.ql + 64 * h;
      uint8_t* qh = y.qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((v[l] & 0xF) | ((v[l + 64] & 0xF) << 4));
        ql[l + 32] = static_cast<uint8_t>((v[l + 32] & 0xF) | ((v[l + 96] & 0xF) << 4));
        qh[l] = static_cast<uint8_t>((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) | ((v[l + 96] >> 4) << 6));
      }
    }
  }
}

namespace {

// ggml's best_index_int8 over kIq4Values: the index of the level nearest x. Level i wins once x
// reaches the midpoint of levels i - 1 and i (a tie goes up), compared as 2x against their sum, both
// exact in float, as llama.cpp's ggml-quants.c does now. (Older versions compared x - v[i-1] with
// v[i] - x, which rounds, and may pick the other level for an x within rounding of a midpoint.)
int nearest_iq4_level(float x) {
  const float x2 = x + x;
  int index = 0;
  for (int step = 8; step > 0; step >>= 1) {
    const int j = index + step;
    if (x2 >= static_cast<float>(kIq4Values[j - 1] + kIq4Values[j])) index = j;
  }
  return index;
}

// Two levels per byte as IQ4_NL keeps them: byte j of 16 holds value j (low nibble) and j + 16 (high).
void pack_iq4_levels(const float* x, float inverse_scale, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) {
    const int lo = nearest_iq4_level(inverse_scale * x[j]), hi = nearest_iq4_level(inverse_scale * x[j + 16]);
    qs[j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

// The weighted least-squares sum of one candidate: x ≈ d·kIq4Values[L] with L the nearest levels to
// inverse_scale·x, weights x² (llama-quantize without an importance matrix); d = sum_qx / sum_q2.
void iq4_fit_sums(const float* x, float inverse_scale, float& sum_qx, float& sum_q2) {
  sum_qx = 0;
  sum_q2 = 0;
  for (int j = 0; j < kBlock; ++j) {
    const float q = kIq4Values[nearest_iq4_level(inverse_scale * x[j])];
    const float w = x[j] * x[j];
    sum_qx += w * q * x[j];
    sum_q2 += w * q * q;
  }
}

// quantize_row_iq4_nl_impl's scale search for one 32-value block (ntry = 7): the fit at the levels of
// inverse scale 127 / max (max the value of largest magnitude, which lands on level +113), then at the
// inverse scales (t - 127) / max, t = -7..7 (negative: max lands near level -127, the table's longer
// side); the candidate that explains the most (sum_qx² / sum_q2) wins. Returns its d, which may be
// negative; 0 for a block below kGroupMaxEps in magnitude.
float fit_iq4_block(const float* x) {
  const float max = signed_absmax(x, kBlock);
  if (std::fabs(max) < kGroupMaxEps) return 0.0f;
  float sum_qx, sum_q2;
  iq4_fit_sums(x, 1 / (-max / static_cast<float>(kIq4Values[0])), sum_qx, sum_q2);
  float d = sum_q2 > 0 ? sum_qx / sum_q2 : 0.0f;
  float best = d * sum_qx;
  constexpr int kTries = 7;
  for (int t = -kTries; t <= kTries; ++t) {
    iq4_fit_sums(x, static_cast<float>(t + kIq4Values[0]) / max, sum_qx, sum_q2);
    if (sum_q2 > 0 && sum_qx * sum_qx > best * sum_q2) {
      d = sum_qx / sum_q2;
      best = d * sum_qx;
    }
  }
  return d;
}

}  // namespace

void quantize_iq4_nl(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_iq4_nl");
  auto* out = reinterpret_cast<BlockIQ4_NL*>(dst);
  for (size_t b = 0; b < count / kBlock; ++b) {
    const float* x = src + b * kBlock;
    const float d = fit_iq4_block(x);
    out[b].d = f32_to_f16(d);
    // The levels at the float scale found, not its fp16 rounding (as llama.cpp).
    pack_iq4_levels(x, d != 0.0f ? 1 / d : 0.0f, out[b].qs);
  }
}

void quantize_iq4_xs(const float* src, uint8_t* dst, size_t count) {
  check_count(count, "quantize_iq4_xs", kSuperBlock);
  auto* out = reinterpret_cast<BlockIQ4_XS*>(dst);
  constexpr int kSubBlocks = kSuperBlock / kBlock;
  for (size_t b = 0; b < count / kSuperBlock; ++b) {
    const float* x = src + b * kSuperBlock;
    BlockIQ4_XS& y = out[b];
    float scales[kSubBlocks];
    for (int ib = 0; ib < kSubBlocks; ++ib) scales[ib] = fit_iq4_block(x + kBlock * ib);
    const float max_scale = signed_absmax(scales, kSubBlocks);
    // Six-bit signed codes l against the largest scale, which becomes -32; each sub-block's levels
    // again at its stored step d·l (d in float, as llama.cpp).
    const float d = -max_scale / 32;
    y.d = f32_to_f16(d);
    const float id = d != 0.0f ? 1 / d : 0.0f;
    y.scales_h = 0;
    for (int ib = 0; ib < kSubBlocks; ++ib) {
      const int l = clamp_int(nearest_int(id * scales[ib]), -32, 31);
      const float dl = d * static_cast<float>(l);
      pack_iq4_levels(x + kBlock * ib, dl != 0.0f ? 1 / dl : 0.0f, y.qs + 16 * ib);
      const int code = l + 32;
      if (ib % 2 == 0) y.scales_l[ib / 2] = static_cast<uint8_t>(code & 0xF);
      else y.scales_l[ib / 2] = static_cast<uint8_t>(y.scales_l[ib / 2] | ((code & 0xF) << 4));
      y.scales_h = static_cast<uint16_t>(y.scales_h | ((code >> 4) << (2 * ib)));
    }
  }
}

}  // namespace podkv::quant
