// CudaBackendOps::decode_chain (a decode row's o, gate | up, down and the next
// layer's q | k | v in one cooperative launch) on the GPU, against a double
// reference on the host (the bf16 weights' values, the same formulas) and against
// the per-launch ops it replaces (matmul, add_rms_norm, silu_mul_rows, add).
// Shapes: small ones with and without the q | k | v bias, q_dim above hidden, the
// last layer (no next projection), inputs shorter than one warp's group of
// chunks, an odd number of q | k | v rows, and Llama-3-8B's (several tasks per
// block, slices above one). Each twice (the grid barrier's counter must be back
// at zero, its generation carried on; h and qkv set to NaN before each launch, so
// every value must be written again), and from a CUDA graph, bit for bit as the
// direct launch. Skips when built without CUDA or when no GPU is visible (CI).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda_backend.h"
#include "backend/cuda_backend_ops.h"
#include "util/dtype.h"

namespace podkv {
namespace {

#if defined(PODKV_HAVE_CUDA)

struct ChainCase {
  int64_t hidden, q_dim, inter, qkv_out;  // qkv_out 0: the last layer
  bool bias;
  const char* what;
};

const ChainCase kChainCases[] = {
    {256, 256, 688, 384, true, "small, q | k | v bias"},
    {384, 512, 1024, 768, false, "q_dim above hidden"},
    {256, 256, 688, 0, false, "the last layer"},
    {64, 64, 40, 96, true, "inputs shorter than a warp's group of chunks"},
    {128, 128, 344, 97, true, "an odd number of q | k | v rows"},
    {4096, 4096, 14336, 6144, false, "Llama-3-8B"},
};
constexpr size_t kLlamaCase = 5;

// Host copies of one case's inputs and their device buffers.
struct ChainData {
  std::vector<uint16_t> wo, wgu, wd, wqkv;
  std::vector<float> attn, x, mlp_norm, next_norm, bias;
  DeviceBuffer d_wo, d_wgu, d_wd, d_wqkv, d_attn, d_x, d_mlp_norm, d_next_norm, d_bias, d_h, d_qkv;
  WeightMatrix m_wo, m_wgu, m_wd, m_wqkv;
};

// Weights drawn on the device (uniform in +-0.05, as bench --random-weights draws them) and read back.
std::vector<uint16_t> random_weights(CudaBackendOps& ops, DeviceBuffer& d, int64_t rows, int64_t cols,
                                     uint64_t seed) {
  std::vector<uint16_t> w(static_cast<size_t>(rows * cols));
  d = DeviceBuffer(ops, w.size() * 2);
  ops.fill_random_bf16(d.data(), static_cast<int64_t>(w.size()), seed, 0.05f);
  ops.download(w.data(), d.data(), w.size() * 2);
  return w;
}

std::vector<float> normal_floats(std::mt19937_64& rng, int64_t n, float mean, float scale) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = mean + scale * normal(rng);
  return v;
}

void make_case(CudaBackendOps& ops, const ChainCase& c, uint64_t seed, ChainData& d) {
  std::mt19937_64 rng(seed);
  d.wo = random_weights(ops, d.d_wo, c.hidden, c.q_dim, seed + 1);
  d.wgu = random_weights(ops, d.d_wgu, 2 * c.inter, c.hidden, seed + 2);
  d.wd = random_weights(ops, d.d_wd, c.hidden, c.inter, seed + 3);
  if (c.qkv_out > 0) d.wqkv = random_weights(ops, d.d_wqkv, c.qkv_out, c.hidden, seed + 4);
  d.attn = normal_floats(rng, c.q_dim, 0.0f, 1.0f);
  d.x = normal_floats(rng, c.hidden, 0.0f, 4.0f);
  d.mlp_norm = normal_floats(rng, c.hidden, 1.0f, 0.1f);
  d.next_norm = normal_floats(rng, c.hidden, 1.0f, 0.1f);
  d.bias = normal_floats(rng, std::max<int64_t>(c.qkv_out, 1), 0.0f, 0.1f);
  auto put = [&](DeviceBuffer& b, const std::vector<float>& v) {
    b = DeviceBuffer(ops, v.size() * 4);
    ops.upload(b.data(), v.data(), v.size() * 4);
  };
  put(d.d_attn, d.attn);
  put(d.d_x, d.x);
  put(d.d_mlp_norm, d.mlp_norm);
  put(d.d_next_norm, d.next_norm);
  put(d.d_bias, d.bias);
  d.d_h = DeviceBuffer(ops, static_cast<size_t>(2 * c.inter) * 4);  // matmul's gate | up for the per-launch ops
  d.d_qkv = DeviceBuffer(ops, static_cast<size_t>(std::max<int64_t>(c.qkv_out, 1)) * 4);
  d.m_wo = {DType::BF16, c.hidden, c.q_dim, d.d_wo.data()};
  d.m_wgu = {DType::BF16, 2 * c.inter, c.hidden, d.d_wgu.data()};
  d.m_wd = {DType::BF16, c.hidden, c.inter, d.d_wd.data()};
  d.m_wqkv = {DType::BF16, c.qkv_out, c.hidden, d.d_wqkv.data()};
}

CudaBackendOps::NextProjection next_of(const ChainCase& c, const ChainData& d) {
  if (c.qkv_out == 0) return {};
  return {&d.m_wqkv, c.bias ? d.d_bias.as<float>() : nullptr, d.d_next_norm.as<float>()};
}

// What a chain leaves: x, h and (with a next projection) qkv.
struct ChainResult {
  std::vector<float> x, h, qkv;
};

ChainResult download(CudaBackendOps& ops, const ChainCase& c, const ChainData& d) {
  ChainResult r{std::vector<float>(c.hidden), std::vector<float>(c.inter), std::vector<float>(c.qkv_out)};
  ops.download(r.x.data(), d.d_x.data(), r.x.size() * 4);
  ops.download(r.h.data(), d.d_h.data(), r.h.size() * 4);
  if (c.qkv_out > 0) ops.download(r.qkv.data(), d.d_qkv.data(), r.qkv.size() * 4);
  return r;
}

constexpr double kEps = 1e-5;

// The same layer in double on the host.
ChainResult reference(const ChainCase& c, const ChainData& d) {
  auto product = [](const std::vector<uint16_t>& w, int64_t row, const std::vector<double>& v) {
    double s = 0;
    for (size_t k = 0; k < v.size(); ++k) s += static_cast<double>(bf16_to_f32(w[row * v.size() + k])) * v[k];
    return s;
  };
  auto normed = [&](const std::vector<double>& x, const std::vector<float>& weight) {
    double ss = 0;
    for (double e : x) ss += e * e;
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + kEps);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * inv * weight[i];
    return out;
  };
  const std::vector<double> attn(d.attn.begin(), d.attn.end());
  std::vector<double> x(d.x.begin(), d.x.end());
  for (int64_t o = 0; o < c.hidden; ++o) x[o] += product(d.wo, o, attn);
  const std::vector<double> n1 = normed(x, d.mlp_norm);
  std::vector<double> h(c.inter);
  for (int64_t j = 0; j < c.inter; ++j) {
    const double g = product(d.wgu, j, n1), u = product(d.wgu, c.inter + j, n1);
    h[j] = g / (1.0 + std::exp(-g)) * u;
  }
  for (int64_t o = 0; o < c.hidden; ++o) x[o] += product(d.wd, o, h);
  ChainResult r{std::vector<float>(x.begin(), x.end()), std::vector<float>(h.begin(), h.end()), {}};
  if (c.qkv_out > 0) {
    const std::vector<double> n2 = normed(x, d.next_norm);
    for (int64_t o = 0; o < c.qkv_out; ++o) r.qkv.push_back(product(d.wqkv, o, n2) + (c.bias ? d.bias[o] : 0.0));
  }
  return r;
}

// The per-launch ops of a decode step without the chain, on the same device buffers.
void per_launch(CudaBackendOps& ops, const ChainCase& c, const ChainData& d, DeviceBuffer& proj, DeviceBuffer& xn,
                DeviceBuffer& h) {
  float* x = d.d_x.as<float>();
  ops.matmul(d.m_wo, d.d_attn.as<float>(), 1, proj.as<float>(), nullptr);
  ops.add_rms_norm(x, proj.as<float>(), d.d_mlp_norm.as<float>(), 1, c.hidden, kEps, xn.as<float>());
  ops.matmul(d.m_wgu, xn.as<float>(), 1, d.d_h.as<float>(), nullptr);
  ops.silu_mul_rows(d.d_h.as<float>(), 1, c.inter, h.as<float>());
  ops.matmul(d.m_wd, h.as<float>(), 1, proj.as<float>(), nullptr);
  if (c.qkv_out == 0) {
    ops.add(x, proj.as<float>(), c.hidden);
    return;
  }
  ops.add_rms_norm(x, proj.as<float>(), d.d_next_norm.as<float>(), 1, c.hidden, kEps, xn.as<float>());
  ops.matmul(d.m_wqkv, xn.as<float>(), 1, d.d_qkv.as<float>(), c.bias ? d.d_bias.as<float>() : nullptr);
}

// max |got - want| over the root mean square of want; infinite where got has a NaN or an infinity
// (std::max would pass over a NaN difference).
double scaled_error(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0, ss = 0;
  for (float w : want) ss += static_cast<double>(w) * w;
  const double rms = std::max(1e-30, std::sqrt(ss / std::max<size_t>(1, want.size())));
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
  }
  return worst / rms;
}

// x back to its first values, h and qkv to NaN: a launch must write all of them again.
void reset(CudaBackendOps& ops, const ChainData& d) {
  ops.upload(d.d_x.data(), d.x.data(), d.x.size() * 4);
  for (const DeviceBuffer* b : {&d.d_h, &d.d_qkv}) {
    const std::vector<uint8_t> nan(b->bytes(), 0xff);
    ops.upload(b->data(), nan.data(), nan.size());
  }
}

bool run_chain(CudaBackendOps& ops, const ChainCase& c, const ChainData& d) {
  return ops.decode_chain(d.m_wo, d.m_wgu, d.m_wd, d.d_mlp_norm.as<float>(), next_of(c, d), kEps, 1,
                          d.d_attn.as<float>(), d.d_x.as<float>(), d.d_h.as<float>(), d.d_qkv.as<float>());
}

TEST(CudaDecodeChain, MatchesADoubleReferenceAndThePerLaunchOps) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  ops.set_decode_fusions(true, false, true);
  uint64_t seed = 100;
  for (const ChainCase& c : kChainCases) {
    ChainData d;
    make_case(ops, c, seed += 10, d);
    ChainResult first;
    for (int repeat = 0; repeat < 2; ++repeat) {
      reset(ops, d);
      ASSERT_TRUE(run_chain(ops, c, d)) << c.what;
      const ChainResult got = download(ops, c, d);
      if (repeat == 0) {
        first = got;
        continue;
      }
      EXPECT_EQ(got.x, first.x) << c.what << ": a second launch";
      EXPECT_EQ(got.h, first.h) << c.what << ": a second launch";
      EXPECT_EQ(got.qkv, first.qkv) << c.what << ": a second launch";
    }
    const ChainResult want = reference(c, d);
    EXPECT_LE(scaled_error(first.x, want.x), 1e-4) << c.what << ": x against the double reference";
    EXPECT_LE(scaled_error(first.h, want.h), 1e-4) << c.what << ": h against the double reference";
    EXPECT_LE(scaled_error(first.qkv, want.qkv), 1e-4) << c.what << ": qkv against the double reference";

    DeviceBuffer proj(ops, c.hidden * 4), xn(ops, c.hidden * 4), h(ops, c.inter * 4);
    ops.upload(d.d_x.data(), d.x.data(), d.x.size() * 4);
    per_launch(ops, c, d, proj, xn, h);
    ChainResult ops_result = download(ops, c, d);
    ops.download(ops_result.h.data(), h.data(), ops_result.h.size() * 4);
    EXPECT_LE(scaled_error(first.x, ops_result.x), 1e-5) << c.what << ": x against the per-launch ops";
    EXPECT_LE(scaled_error(first.h, ops_result.h), 1e-5) << c.what << ": h against the per-launch ops";
    EXPECT_LE(scaled_error(first.qkv, ops_result.qkv), 1e-5) << c.what << ": qkv against the per-launch ops";
  }
}

TEST(CudaDecodeChain, AGraphReplaysTheDirectLaunchBitForBit) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  ops.set_decode_fusions(true, false, true);
  for (const size_t index : {size_t{0}, kLlamaCase}) {
    const ChainCase& c = kChainCases[index];
    ChainData d;
    make_case(ops, c, 7 + index, d);
    reset(ops, d);
    ASSERT_TRUE(run_chain(ops, c, d)) << c.what;
    const ChainResult direct = download(ops, c, d);
    const std::string key = std::string("chain ") + c.what;
    ops.begin_capture();
    const bool captured = run_chain(ops, c, d);
    ops.end_capture(key);  // also after a failed launch: the stream must leave capture mode
    ASSERT_TRUE(captured) << c.what;
    for (int replay = 0; replay < 3; ++replay) {
      reset(ops, d);
      ops.run_graph(key);
      const ChainResult got = download(ops, c, d);
      EXPECT_EQ(got.x, direct.x) << c.what << ", replay " << replay;
      EXPECT_EQ(got.h, direct.h) << c.what << ", replay " << replay;
      EXPECT_EQ(got.qkv, direct.qkv) << c.what << ", replay " << replay;
    }
  }
}

TEST(CudaDecodeChain, DeclinesWhatItDoesNotTake) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOps ops;
  ops.set_decode_fusions(true, false, true);
  const ChainCase& c = kChainCases[0];
  ChainData d;
  make_case(ops, c, 9, d);
  const float* attn = d.d_attn.as<float>();
  float *x = d.d_x.as<float>(), *h = d.d_h.as<float>(), *qkv = d.d_qkv.as<float>();
  const float* norm = d.d_mlp_norm.as<float>();
  const CudaBackendOps::NextProjection next = next_of(c, d);
  EXPECT_FALSE(ops.decode_chain(d.m_wo, d.m_wgu, d.m_wd, norm, next, kEps, 2, attn, x, h, qkv)) << "two rows";
  WeightMatrix f32 = d.m_wd;
  f32.dtype = DType::F32;
  EXPECT_FALSE(ops.decode_chain(d.m_wo, d.m_wgu, f32, norm, next, kEps, 1, attn, x, h, qkv)) << "F32 weights";
  // inter 684: not a multiple of 8 (the same buffers, read no further than before).
  const WeightMatrix gu{DType::BF16, 2 * 684, c.hidden, d.d_wgu.data()};
  const WeightMatrix down{DType::BF16, c.hidden, 684, d.d_wd.data()};
  EXPECT_FALSE(ops.decode_chain(d.m_wo, gu, down, norm, next, kEps, 1, attn, x, h, qkv)) << "inter 684";
  ops.set_decode_fusions(true, false, false);
  EXPECT_FALSE(ops.decode_chain(d.m_wo, d.m_wgu, d.m_wd, norm, next, kEps, 1, attn, x, h, qkv)) << "chain off";
  ops.synchronize();
}

#else

TEST(CudaDecodeChain, MatchesADoubleReferenceAndThePerLaunchOps) {
  GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)";
}
TEST(CudaDecodeChain, AGraphReplaysTheDirectLaunchBitForBit) { GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)"; }
TEST(CudaDecodeChain, DeclinesWhatItDoesNotTake) { GTEST_SKIP() << "built without CUDA (PODKV_CUDA=OFF)"; }

#endif

}  // namespace
}  // namespace podkv
