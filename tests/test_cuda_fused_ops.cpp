// CudaBackendOps' fused steps against the CPU ops they replace, on the GPU.
// split_qkv_rope (one launch for the stacked projection's split and the RoPE of
// q and k) against the CPU's split and apply_rope, over odd shapes: MHA, GQA,
// MQA, head_dim 64/80/128, both pair layouts, rows 1 and 37 at far positions;
// head_rms_norm (Qwen3's q and k norms) against the CPU's rms_norm per head;
// add_rms_norm (the residual add written back, then the norm of the sum) against
// a plain double reference, rows that fit the kernel's registers and one that does not;
// matmul_swiglu (SwiGLU's projection and product, one launch for a decode row)
// against the matmul and silu_mul_rows it replaces and a double reference;
// matmul_add_rms_norm (a projection into the residual stream and the next norm)
// against the matmul and add_rms_norm it replaces; the bf16 prompt path's staged GEMM inputs
// against the float32 ops and a double reference.
// Skips when built without CUDA or when no GPU is visible (CI).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda_backend.h"
#include "backend/cuda_backend_ops.h"
#include "ops/elementwise.h"
#include "util/dtype.h"
#include "util/error.h"

namespace podkv {
namespace {

#if defined(PODKV_HAVE_CUDA)
struct FusedShape {
  int64_t rows;
  int heads, kv_heads, dim;
  bool interleaved;
};

TEST(CudaFusedOps, SplitQkvRopeMatchesCpuSplitAndRope) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  const FusedShape shapes[] = {{1, 32, 8, 128, false}, {37, 8, 8, 64, true}, {5, 12, 1, 80, false}, {37, 4, 2, 128, true}};
  for (const FusedShape& s : shapes) {
    const int64_t nq = static_cast<int64_t>(s.heads) * s.dim, nkv = static_cast<int64_t>(s.kv_heads) * s.dim;
    const int64_t width = nq + 2 * nkv;
    std::vector<float> qkv(static_cast<size_t>(s.rows * width)), inv_freq(static_cast<size_t>(s.dim / 2));
    for (float& x : qkv) x = u(rng);
    for (int i = 0; i < s.dim / 2; ++i) inv_freq[i] = static_cast<float>(std::pow(500000.0, -2.0 * i / s.dim));
    std::vector<int64_t> positions(static_cast<size_t>(s.rows));
    for (int64_t r = 0; r < s.rows; ++r) positions[r] = r == 0 ? 0 : 31000 + 977 * r;  // 0 and far ones

    // The CPU: split, then rotate q and k in place.
    std::vector<float> q(static_cast<size_t>(s.rows * nq)), k(static_cast<size_t>(s.rows * nkv)), v(k.size());
    for (int64_t r = 0; r < s.rows; ++r)
      for (int64_t c = 0; c < width; ++c) {
        const float x = qkv[r * width + c];
        if (c < nq) q[r * nq + c] = x;
        else if (c < nq + nkv) k[r * nkv + c - nq] = x;
        else v[r * nkv + c - nq - nkv] = x;
      }
    apply_rope(q.data(), s.rows, s.heads, s.dim, positions.data(), inv_freq.data(), s.interleaved);
    apply_rope(k.data(), s.rows, s.kv_heads, s.dim, positions.data(), inv_freq.data(), s.interleaved);

    DeviceBuffer d_qkv(ops, qkv.size() * 4), d_freq(ops, inv_freq.size() * 4), d_pos(ops, positions.size() * 8);
    DeviceBuffer d_q(ops, q.size() * 4), d_k(ops, k.size() * 4), d_v(ops, v.size() * 4);
    ops.upload(d_qkv.data(), qkv.data(), qkv.size() * 4);
    ops.upload(d_freq.data(), inv_freq.data(), inv_freq.size() * 4);
    ops.upload(d_pos.data(), positions.data(), positions.size() * 8);
    ops.split_qkv_rope(d_qkv.as<float>(), s.rows, s.heads, s.kv_heads, s.dim, d_pos.as<int64_t>(), d_freq.as<float>(),
                       s.interleaved, d_q.as<float>(), d_k.as<float>(), d_v.as<float>());
    std::vector<float> gq(q.size()), gk(k.size()), gv(v.size());
    ops.download(gq.data(), d_q.data(), gq.size() * 4);
    ops.download(gk.data(), d_k.data(), gk.size() * 4);
    ops.download(gv.data(), d_v.data(), gv.size() * 4);
    const std::string what = "rows " + std::to_string(s.rows) + ", heads " + std::to_string(s.heads) + "/" +
                             std::to_string(s.kv_heads) + ", dim " + std::to_string(s.dim) +
                             (s.interleaved ? ", interleaved" : "");
    // The same float32 angle; the CPU rotates in float32, the GPU in double: a few float32 ulps apart.
    auto expect_close = [&](const std::vector<float>& want, const std::vector<float>& got, const char* name) {
      double worst = 0;
      for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(want[i] - got[i])));
      EXPECT_LE(worst, 1e-5) << name << ", " << what;
    };
    expect_close(q, gq, "q");
    expect_close(k, gk, "k");
    EXPECT_EQ(v, gv) << "v, " << what;
  }
}

// Qwen3's q and k norms in place on the stacked projection against the CPU's rms_norm over each
// head (what CpuBackend runs): MHA, GQA, MQA, head_dim 32/64/80/128, v left as it was.
TEST(CudaFusedOps, HeadRmsNormMatchesCpuNormPerHead) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  std::mt19937_64 rng(13);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const double eps = 1e-6;
  const FusedShape shapes[] = {{1, 32, 8, 128, false}, {37, 8, 8, 64, false}, {5, 12, 1, 80, false}, {300, 4, 2, 32, false}};
  for (const FusedShape& s : shapes) {
    const int64_t nq = static_cast<int64_t>(s.heads) * s.dim, nkv = static_cast<int64_t>(s.kv_heads) * s.dim;
    const int64_t width = nq + 2 * nkv;
    std::vector<float> qkv(static_cast<size_t>(s.rows * width)), wq(static_cast<size_t>(s.dim)), wk(wq.size());
    for (float& x : qkv) x = normal(rng);
    for (float& x : wq) x = normal(rng);
    for (float& x : wk) x = normal(rng);
    std::vector<float> want = qkv;
    for (int64_t r = 0; r < s.rows; ++r) {
      float* row = want.data() + r * width;
      rms_norm(row, wq.data(), s.heads, s.dim, eps, row);
      rms_norm(row + nq, wk.data(), s.kv_heads, s.dim, eps, row + nq);
    }
    DeviceBuffer d_qkv(ops, qkv.size() * 4), d_wq(ops, wq.size() * 4), d_wk(ops, wk.size() * 4);
    ops.upload(d_qkv.data(), qkv.data(), qkv.size() * 4);
    ops.upload(d_wq.data(), wq.data(), wq.size() * 4);
    ops.upload(d_wk.data(), wk.data(), wk.size() * 4);
    ops.head_rms_norm(d_qkv.as<float>(), s.rows, s.heads, s.kv_heads, s.dim, d_wq.as<float>(), d_wk.as<float>(), eps);
    std::vector<float> got(qkv.size());
    ops.download(got.data(), d_qkv.data(), got.size() * 4);
    double worst = 0;
    for (int64_t r = 0; r < s.rows; ++r)
      for (int64_t c = 0; c < width; ++c) {
        const size_t i = static_cast<size_t>(r * width + c);
        if (c >= nq + nkv) {
          ASSERT_EQ(got[i], qkv[i]) << "v changed at row " << r << ", column " << c;
          continue;
        }
        ASSERT_NE(got[i], qkv[i]) << "q or k not normalized at row " << r << ", column " << c;
        worst = std::max(worst, std::fabs(got[i] - want[i]) / std::max(1e-3, std::fabs(static_cast<double>(want[i]))));
      }
    EXPECT_LE(worst, 1e-6) << "rows " << s.rows << ", heads " << s.heads << "/" << s.kv_heads << ", dim " << s.dim;
  }
}

TEST(CudaFusedOps, AddRmsNormMatchesAddThenNorm) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const double eps = 1e-5;
  for (int64_t n : {64, 4096, 4099, 9000})
    for (int64_t rows : {1, 37}) {
      std::vector<float> x(static_cast<size_t>(rows * n)), res(x.size()), w(static_cast<size_t>(n));
      for (float& e : x) e = normal(rng);
      for (float& e : res) e = normal(rng);
      for (float& e : w) e = normal(rng);
      DeviceBuffer d_x(ops, x.size() * 4), d_res(ops, x.size() * 4), d_w(ops, w.size() * 4), d_out(ops, x.size() * 4);
      ops.upload(d_x.data(), x.data(), x.size() * 4);
      ops.upload(d_res.data(), res.data(), res.size() * 4);
      ops.upload(d_w.data(), w.data(), w.size() * 4);
      ops.add_rms_norm(d_x.as<float>(), d_res.as<float>(), d_w.as<float>(), rows, n, eps, d_out.as<float>());
      std::vector<float> got_x(x.size()), got(x.size());
      ops.download(got_x.data(), d_x.data(), x.size() * 4);
      ops.download(got.data(), d_out.data(), x.size() * 4);
      double worst = 0;
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < n; ++i) {
          const float sum = x[r * n + i] + res[r * n + i];  // float32, as the kernel adds
          ASSERT_EQ(got_x[r * n + i], sum) << "x + residual, row " << r << ", n " << n;
          ss += static_cast<double>(sum) * sum;
        }
        const double inv = 1.0 / std::sqrt(ss / n + eps);
        for (int64_t i = 0; i < n; ++i) {
          const double want = (x[r * n + i] + res[r * n + i]) * inv * w[i];
          worst = std::max(worst, std::fabs(got[r * n + i] - want) / std::max(1e-6, std::fabs(want)));
        }
      }
      EXPECT_LE(worst, 1e-6) << "rows " << rows << ", n " << n;
    }
}

// SwiGLU's stacked projection then silu(gate) * up: for one row of BF16 weights one launch
// (gemv_swiglu_row, each warp taking gate j and up j), otherwise the matmul and silu_mul_rows. Both
// against the two launches (exactly: the same sums, the same product) and a double reference.
TEST(CudaFusedOps, MatmulSwigluEqualsMatmulThenSiluMul) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  ops.set_decode_fusions(true, true, false);  // norm: off by default (PODKV_CUDA_DECODE_FUSE)
  std::mt19937_64 rng(13);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  struct Case {
    int64_t inter, in, rows;
  };
  // 1376 x 512: models/podkv-long's MLP; in 40: one group of chunks and no rest; in 36: not a
  // multiple of 8 (the fallback); 3 rows: the tensor-core GEMV and silu_mul_rows.
  for (const Case c : {Case{1376, 512, 1}, Case{100, 4104, 1}, Case{7, 40, 1}, Case{33, 36, 1}, Case{100, 512, 3}}) {
    const int64_t out = 2 * c.inter;
    std::vector<uint16_t> w(static_cast<size_t>(out * c.in));
    for (uint16_t& e : w) e = f32_to_bf16(normal(rng) * 0.1f);
    std::vector<float> x(static_cast<size_t>(c.rows * c.in));
    for (float& e : x) e = normal(rng);
    DeviceBuffer d_w(ops, w.size() * 2), d_x(ops, x.size() * 4), d_gu(ops, c.rows * out * 4);
    DeviceBuffer d_one(ops, c.rows * c.inter * 4), d_two(ops, c.rows * c.inter * 4);
    ops.upload(d_w.data(), w.data(), w.size() * 2);
    ops.upload(d_x.data(), x.data(), x.size() * 4);
    const WeightMatrix wm{DType::BF16, out, c.in, d_w.data()};
    ops.matmul_swiglu(wm, d_x.as<float>(), c.rows, d_gu.as<float>(), d_one.as<float>());
    ops.matmul(wm, d_x.as<float>(), c.rows, d_gu.as<float>(), nullptr);
    ops.silu_mul_rows(d_gu.as<float>(), c.rows, c.inter, d_two.as<float>());
    std::vector<float> one(static_cast<size_t>(c.rows * c.inter)), two(one.size());
    ops.download(one.data(), d_one.data(), one.size() * 4);
    ops.download(two.data(), d_two.data(), two.size() * 4);
    const std::string what = "inter " + std::to_string(c.inter) + ", in " + std::to_string(c.in) + ", rows " +
                             std::to_string(c.rows);
    EXPECT_EQ(one, two) << what;
    double worst = 0;
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t j = 0; j < c.inter; ++j) {
        double g = 0, u = 0;
        for (int64_t k = 0; k < c.in; ++k) {
          g += static_cast<double>(bf16_to_f32(w[j * c.in + k])) * x[r * c.in + k];
          u += static_cast<double>(bf16_to_f32(w[(c.inter + j) * c.in + k])) * x[r * c.in + k];
        }
        const double want = g / (1.0 + std::exp(-g)) * u;
        worst = std::max(worst, std::fabs(one[r * c.inter + j] - want) / std::max(1.0, std::fabs(want)));
      }
    EXPECT_LE(worst, 1e-4) << what;  // float32 sums of bf16 products (3 rows: x in bf16 hi + lo)
  }
}

// A projection into the residual stream then the next RMSNorm: for one row of BF16 weights one
// launch (gemv_residual_norm_row: the last block to finish takes the norm), otherwise the matmul and
// add_rms_norm. x exactly as the two launches leave it, the norm within the order of its double sum;
// twice per shape (the blocks' counter must be back at zero), and without a norm (the add only).
TEST(CudaFusedOps, MatmulAddRmsNormEqualsMatmulThenAddRmsNorm) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  ops.set_decode_fusions(true, true, false);  // norm: off by default (PODKV_CUDA_DECODE_FUSE)
  std::mt19937_64 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  struct Case {
    int64_t out, in, rows;
  };
  // 4096 x 4096: Llama-3-8B's o projection; 512 x 1376: models/podkv-long's down projection; 100 x 40:
  // a last block with warps past the end; 33 x 36: in not a multiple of 8 (the fallback); 3 rows.
  for (const Case c : {Case{4096, 4096, 1}, Case{512, 1376, 1}, Case{100, 40, 1}, Case{33, 36, 1}, Case{512, 64, 3}})
    for (bool with_norm : {true, false}) {
      std::vector<uint16_t> w(static_cast<size_t>(c.out * c.in));
      for (uint16_t& e : w) e = f32_to_bf16(normal(rng) * 0.1f);
      std::vector<float> a(static_cast<size_t>(c.rows * c.in)), x(static_cast<size_t>(c.rows * c.out)), g(c.out);
      for (float& e : a) e = normal(rng);
      for (float& e : x) e = normal(rng) * 4.0f;
      for (float& e : g) e = normal(rng);
      DeviceBuffer d_w(ops, w.size() * 2), d_a(ops, a.size() * 4), d_g(ops, g.size() * 4), d_proj(ops, x.size() * 4);
      DeviceBuffer d_x1(ops, x.size() * 4), d_x2(ops, x.size() * 4), d_n1(ops, x.size() * 4), d_n2(ops, x.size() * 4);
      ops.upload(d_w.data(), w.data(), w.size() * 2);
      ops.upload(d_a.data(), a.data(), a.size() * 4);
      ops.upload(d_g.data(), g.data(), g.size() * 4);
      const WeightMatrix wm{DType::BF16, c.out, c.in, d_w.data()};
      const float* weight = with_norm ? d_g.as<float>() : nullptr;
      const std::string what = "out " + std::to_string(c.out) + ", in " + std::to_string(c.in) + ", rows " +
                               std::to_string(c.rows) + (with_norm ? "" : ", no norm");
      for (int repeat = 0; repeat < 2; ++repeat) {
        ops.upload(d_x1.data(), x.data(), x.size() * 4);
        ops.upload(d_x2.data(), x.data(), x.size() * 4);
        ops.fill_zero(d_n1.data(), d_n1.bytes());
        ops.matmul_add_rms_norm(wm, d_a.as<float>(), c.rows, d_proj.as<float>(), d_x1.as<float>(), weight, 1e-5,
                                d_n1.as<float>());
        ops.matmul(wm, d_a.as<float>(), c.rows, d_proj.as<float>(), nullptr);
        if (with_norm)
          ops.add_rms_norm(d_x2.as<float>(), d_proj.as<float>(), weight, c.rows, c.out, 1e-5, d_n2.as<float>());
        else
          ops.add(d_x2.as<float>(), d_proj.as<float>(), c.rows * c.out);
        std::vector<float> x1(x.size()), x2(x.size()), n1(x.size()), n2(x.size());
        ops.download(x1.data(), d_x1.data(), x.size() * 4);
        ops.download(x2.data(), d_x2.data(), x.size() * 4);
        EXPECT_EQ(x1, x2) << "x, " << what << ", call " << repeat;
        if (!with_norm) continue;
        ops.download(n1.data(), d_n1.data(), x.size() * 4);
        ops.download(n2.data(), d_n2.data(), x.size() * 4);
        double worst = 0;
        for (size_t i = 0; i < n1.size(); ++i)
          worst = std::max(worst, std::fabs(static_cast<double>(n1[i]) - n2[i]) /
                                      std::max(1e-3, std::fabs(static_cast<double>(n2[i]))));
        EXPECT_LE(worst, 1e-6) << "norm, " << what << ", call " << repeat;
      }
    }
}

// The bf16 prompt path (prompt rows of BF16 weights, cuda_backend_ops.h) against the float32 ops it
// replaces and a double reference. Shapes: out 512 x in 1376 at 9 rows (the fewest that take it) and
// 300, 96 x 64 at 37, 40 x 30 at 17 (odd widths: the scalar SwiGLU path).
//  - stage_rms_norm then matmul_staged (+ bias) equals rms_norm then matmul exactly: both round the
//    same float32 norm to bf16 and run the same GEMM;
//  - stage_rows then matmul_staged_add (x += inside the GEMM) equals matmul then add to float32
//    rounding;
//  - matmul_staged_bf16 is matmul's float32 result rounded to bf16 (within one bf16 step);
//  - stage_swiglu from a bf16 gu then matmul_staged_add against a double reference from the same
//    bf16 gu, the product rounded to bf16 as the kernel rounds it.
struct StagedCase {
  int64_t out, in, rows;
};
const StagedCase kStagedCases[] = {{512, 1376, 9}, {512, 1376, 300}, {96, 64, 37}, {40, 30, 17}};

TEST(CudaFusedOps, StagedNormAndMatmulEqualTheFloat32Path) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  std::mt19937_64 rng(19);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const StagedCase c : kStagedCases) {
    const std::string what = std::to_string(c.out) + " x " + std::to_string(c.in) + ", rows " + std::to_string(c.rows);
    ASSERT_TRUE(ops.prompt_bf16_path(c.rows)) << what;
    std::vector<uint16_t> w(static_cast<size_t>(c.out * c.in));
    for (uint16_t& e : w) e = f32_to_bf16(normal(rng) * 0.1f);
    std::vector<float> x(static_cast<size_t>(c.rows * c.in)), g(c.in), bias(c.out);
    for (float& e : x) e = normal(rng) * 4.0f;
    for (float& e : g) e = normal(rng);
    for (float& e : bias) e = normal(rng);
    DeviceBuffer d_w(ops, w.size() * 2), d_x(ops, x.size() * 4), d_g(ops, g.size() * 4), d_b(ops, bias.size() * 4);
    DeviceBuffer d_xn(ops, x.size() * 4), d_y1(ops, c.rows * c.out * 4), d_y2(ops, c.rows * c.out * 4);
    ops.upload(d_w.data(), w.data(), w.size() * 2);
    ops.upload(d_x.data(), x.data(), x.size() * 4);
    ops.upload(d_g.data(), g.data(), g.size() * 4);
    ops.upload(d_b.data(), bias.data(), bias.size() * 4);
    const WeightMatrix wm{DType::BF16, c.out, c.in, d_w.data()};
    for (const float* b : {static_cast<const float*>(nullptr), static_cast<const float*>(d_b.as<float>())}) {
      ops.stage_rms_norm(d_x.as<float>(), d_g.as<float>(), c.rows, c.in, 1e-5);
      ops.matmul_staged(wm, c.rows, d_y1.as<float>(), b);
      ops.rms_norm(d_x.as<float>(), d_g.as<float>(), c.rows, c.in, 1e-5, d_xn.as<float>());
      ops.matmul(wm, d_xn.as<float>(), c.rows, d_y2.as<float>(), b);
      std::vector<float> y1(static_cast<size_t>(c.rows * c.out)), y2(y1.size());
      ops.download(y1.data(), d_y1.data(), y1.size() * 4);
      ops.download(y2.data(), d_y2.data(), y2.size() * 4);
      EXPECT_EQ(y1, y2) << what << (b != nullptr ? ", bias" : "");
    }
  }
}

TEST(CudaFusedOps, StagedMatmulAddAndBf16OutMatchTheFloat32Path) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  std::mt19937_64 rng(23);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const StagedCase c : kStagedCases) {
    const std::string what = std::to_string(c.out) + " x " + std::to_string(c.in) + ", rows " + std::to_string(c.rows);
    std::vector<uint16_t> w(static_cast<size_t>(c.out * c.in));
    for (uint16_t& e : w) e = f32_to_bf16(normal(rng) * 0.1f);
    std::vector<float> a(static_cast<size_t>(c.rows * c.in)), x(static_cast<size_t>(c.rows * c.out));
    for (float& e : a) e = normal(rng);
    for (float& e : x) e = normal(rng) * 4.0f;
    DeviceBuffer d_w(ops, w.size() * 2), d_a(ops, a.size() * 4), d_x1(ops, x.size() * 4), d_x2(ops, x.size() * 4);
    DeviceBuffer d_proj(ops, x.size() * 4), d_y16(ops, x.size() * 2);
    ops.upload(d_w.data(), w.data(), w.size() * 2);
    ops.upload(d_a.data(), a.data(), a.size() * 4);
    ops.upload(d_x1.data(), x.data(), x.size() * 4);
    ops.upload(d_x2.data(), x.data(), x.size() * 4);
    const WeightMatrix wm{DType::BF16, c.out, c.in, d_w.data()};
    ops.stage_rows(d_a.as<float>(), c.rows, c.in);
    ops.matmul_staged_add(wm, c.rows, d_x1.as<float>());
    ops.matmul_staged_bf16(wm, c.rows, static_cast<uint16_t*>(d_y16.data()));
    ops.matmul(wm, d_a.as<float>(), c.rows, d_proj.as<float>(), nullptr);
    ops.add(d_x2.as<float>(), d_proj.as<float>(), c.rows * c.out);
    std::vector<float> x1(x.size()), x2(x.size()), proj(x.size());
    std::vector<uint16_t> y16(x.size());
    ops.download(x1.data(), d_x1.data(), x.size() * 4);
    ops.download(x2.data(), d_x2.data(), x.size() * 4);
    ops.download(proj.data(), d_proj.data(), x.size() * 4);
    ops.download(y16.data(), d_y16.data(), x.size() * 2);
    double worst_add = 0, worst_bf16 = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      worst_add = std::max(worst_add, std::fabs(static_cast<double>(x1[i]) - x2[i]) / std::max(1.0, std::fabs(static_cast<double>(x2[i]))));
      // One bf16 step of the float32 result (2^-8 relative), plus the accumulation order's ulps.
      worst_bf16 = std::max(worst_bf16, std::fabs(static_cast<double>(bf16_to_f32(y16[i])) - proj[i]) /
                                            (std::fabs(proj[i]) * 0.00390625 + 1e-5));
    }
    EXPECT_LE(worst_add, 1e-6) << "x += o inside the GEMM, " << what;
    EXPECT_LE(worst_bf16, 1.0) << "bf16 out, " << what;
  }
  // A staged GEMM whose input was not staged, or of another width: one line naming what is staged.
  const WeightMatrix other{DType::BF16, 8, 7, nullptr};
  try {
    ops.matmul_staged(other, 17, nullptr, nullptr);
    ADD_FAILURE() << "no error for an unstaged input";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no staged input of 17 x 7"), std::string::npos) << e.what();
  }
}

TEST(CudaFusedOps, StagedSwigluMatchesADoubleReference) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  std::mt19937_64 rng(29);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const StagedCase c : kStagedCases) {
    const int64_t inter = c.in;
    const std::string what = std::to_string(c.out) + " x " + std::to_string(inter) + ", rows " + std::to_string(c.rows);
    std::vector<uint16_t> w(static_cast<size_t>(c.out * inter)), gu(static_cast<size_t>(c.rows * 2 * inter));
    for (uint16_t& e : w) e = f32_to_bf16(normal(rng) * 0.1f);
    for (uint16_t& e : gu) e = f32_to_bf16(normal(rng) * 2.0f);
    std::vector<float> x(static_cast<size_t>(c.rows * c.out));
    for (float& e : x) e = normal(rng) * 4.0f;
    DeviceBuffer d_w(ops, w.size() * 2), d_gu(ops, gu.size() * 2), d_x(ops, x.size() * 4);
    ops.upload(d_w.data(), w.data(), w.size() * 2);
    ops.upload(d_gu.data(), gu.data(), gu.size() * 2);
    ops.upload(d_x.data(), x.data(), x.size() * 4);
    const WeightMatrix wm{DType::BF16, c.out, inter, d_w.data()};
    ops.stage_swiglu(static_cast<const uint16_t*>(d_gu.data()), c.rows, inter);
    ops.matmul_staged_add(wm, c.rows, d_x.as<float>());
    std::vector<float> got(x.size());
    ops.download(got.data(), d_x.data(), x.size() * 4);
    double worst = 0;
    for (int64_t r = 0; r < c.rows; ++r) {
      // The product in double, rounded to bf16 as the GEMM's input.
      std::vector<double> p(static_cast<size_t>(inter));
      for (int64_t k = 0; k < inter; ++k) {
        const double gate = bf16_to_f32(gu[r * 2 * inter + k]), up = bf16_to_f32(gu[r * 2 * inter + inter + k]);
        p[k] = bf16_to_f32(f32_to_bf16(static_cast<float>(gate / (1.0 + std::exp(-gate)) * up)));
      }
      for (int64_t o = 0; o < c.out; ++o) {
        double sum = x[r * c.out + o], mass = std::fabs(x[r * c.out + o]);
        for (int64_t k = 0; k < inter; ++k) {
          const double t = bf16_to_f32(w[o * inter + k]) * p[k];
          sum += t, mass += std::fabs(t);
        }
        // float32 accumulation, and a product whose float32 value rounds to the other bf16 neighbour.
        worst = std::max(worst, std::fabs(got[r * c.out + o] - sum) / (mass * 1e-3));
      }
    }
    EXPECT_LE(worst, 1.0) << what;
  }
}
#else
TEST(CudaFusedOps, SplitQkvRopeMatchesCpuSplitAndRope) { GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)"; }
TEST(CudaFusedOps, StagedNormAndMatmulEqualTheFloat32Path) { GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)"; }
TEST(CudaFusedOps, StagedMatmulAddAndBf16OutMatchTheFloat32Path) {
  GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)";
}
TEST(CudaFusedOps, StagedSwigluMatchesADoubleReference) { GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)"; }
TEST(CudaFusedOps, AddRmsNormMatchesAddThenNorm) { GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)"; }
TEST(CudaFusedOps, HeadRmsNormMatchesCpuNormPerHead) { GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)"; }
TEST(CudaFusedOps, MatmulSwigluEqualsMatmulThenSiluMul) { GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)"; }
TEST(CudaFusedOps, MatmulAddRmsNormEqualsMatmulThenAddRmsNorm) {
  GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)";
}
#endif

}  // namespace
}  // namespace podkv
