// The decode chain's RoPE + KV write on CUDA (CudaBackendOps::decode_chain with next.rope: the next
// layer's split, RoPE and KV write in the chain's q | k | v stage) against what it replaces: the
// chain without it, then split_qkv_rope_kv_write (checked against the references in kv_cases.cpp).
// One decode row of bf16 entries through the step's view: the same x, q, k, v and pool bytes,
// exactly. Dense, PoD, StreamingLLM and CLA layouts (CLA's odd layers keep no entries: nothing to
// write), head sizes 128, 96, 80 and 64, MHA, GQA and MQA, plain and interleaved pairs, with and
// without the q | k | v bias, pages of 1 to 64 tokens, a first token and long histories, and a
// Llama-3-8B-shaped layer (hidden 4096, 32 query heads of 128 over 8 KV heads: several slices per
// unit in the q | k | v stage).
#include <string>

#include "harness.h"
#include "kv_scenario.h"
#include "util/dtype.h"

#if defined(PODKV_HAVE_CUDA)
#include "backend/cuda_backend_ops.h"
#endif

namespace podkv::backend_test {

#if defined(PODKV_HAVE_CUDA)

namespace {

struct ChainRopeSpec {
  const char* policy;
  KvGeometry geometry;
  int64_t hidden, inter;
  bool bias, interleaved;
  int64_t history;  // the row's position
  int page_tokens, next_layer;
  std::string describe() const {
    const KvGeometry& g = geometry;
    return std::string(policy) + " L=" + std::to_string(g.layers) + " Hkv=" + std::to_string(g.kv_heads) +
           " H=" + std::to_string(g.heads) + " d=" + std::to_string(g.dim) + " hidden=" + std::to_string(hidden) +
           " pos=" + std::to_string(history) + " page=" + std::to_string(page_tokens) +
           " layer=" + std::to_string(next_layer) + (bias ? " bias" : "") + (interleaved ? " il" : "");
  }
};

const ChainRopeSpec kSpecs[] = {
    {"dense", {4, 8, 32, 128}, 4096, 1024, false, false, 300, 16, 1},
    {"dense", {4, 8, 32, 128}, 4096, 1024, true, true, 4096, 64, 3},
    {"pod", {4, 2, 8, 64}, 512, 688, true, false, 99, 64, 1},
    {"pod", {4, 2, 2, 128}, 2048, 512, false, true, 1000, 16, 2},
    {"cla", {4, 2, 4, 96}, 256, 344, false, true, 40, 1, 1},
    {"streaming", {4, 1, 4, 80}, 320, 256, true, false, 0, 8, 2},
};

// A layer's weights and inputs, drawn once per spec (both passes read the same ones).
struct ChainInputs {
  DeviceBuffer wo, wgu, wd, wqkv, attn, x, mlp_norm, next_norm, bias;
  WeightMatrix m_wo, m_wgu, m_wd, m_wqkv;
  std::vector<float> x0;
};

DeviceBuffer bf16_weights(BackendOps& ops, std::mt19937_64& rng, int64_t rows, int64_t cols) {
  const std::vector<float> w = normal_floats(rng, static_cast<size_t>(rows * cols), 0.05f);
  std::vector<uint16_t> bits(w.size());
  for (size_t i = 0; i < w.size(); ++i) bits[i] = f32_to_bf16(w[i]);
  return to_device(ops, bits);
}

ChainInputs chain_inputs(BackendOps& ops, const ChainRopeSpec& c, uint64_t seed) {
  const KvGeometry& g = c.geometry;
  const int64_t q_dim = int64_t{g.heads} * g.dim, qkv_out = q_dim + 2 * int64_t{g.kv_heads} * g.dim;
  std::mt19937_64 rng(seed);
  ChainInputs in;
  in.wo = bf16_weights(ops, rng, c.hidden, q_dim);
  in.wgu = bf16_weights(ops, rng, 2 * c.inter, c.hidden);
  in.wd = bf16_weights(ops, rng, c.hidden, c.inter);
  in.wqkv = bf16_weights(ops, rng, qkv_out, c.hidden);
  in.attn = to_device(ops, normal_floats(rng, q_dim));
  in.x0 = normal_floats(rng, c.hidden, 4.0f);
  in.x = to_device(ops, in.x0);
  std::vector<float> norm = normal_floats(rng, c.hidden, 0.1f);
  for (float& v : norm) v += 1.0f;
  in.mlp_norm = to_device(ops, norm);
  for (float& v : norm) v = 2.0f - v;
  in.next_norm = to_device(ops, norm);
  in.bias = to_device(ops, normal_floats(rng, qkv_out, 0.1f));
  in.m_wo = {DType::BF16, c.hidden, q_dim, in.wo.data()};
  in.m_wgu = {DType::BF16, 2 * c.inter, c.hidden, in.wgu.data()};
  in.m_wd = {DType::BF16, c.hidden, c.inter, in.wd.data()};
  in.m_wqkv = {DType::BF16, qkv_out, c.hidden, in.wqkv.data()};
  return in;
}

// What one pass leaves: x, q, k, v and the pool's bytes; whether the chain ran (and took the RoPE).
struct ChainPass {
  std::vector<float> x, q, k, v;
  std::vector<uint8_t> pool;
  bool chained = false, took_rope = false;
};

ChainPass chain_pass(CudaBackendOps& ops, const ChainRopeSpec& c, ChainInputs& in, uint64_t seed, bool fused) {
  const KvGeometry& g = c.geometry;
  KvCaseSpec spec{c.policy, KvDType::BF16, c.page_tokens, g, {{c.history, 1, false}}};
  KvScenario s(ops, spec, seed);  // the same seed: the same history, pages and pool bytes
  const int64_t nq = int64_t{g.heads} * g.dim, nkv = int64_t{g.kv_heads} * g.dim;
  std::vector<float> inv_freq(static_cast<size_t>(g.dim / 2));
  for (int i = 0; i < g.dim / 2; ++i) inv_freq[i] = static_cast<float>(std::pow(500000.0, -2.0 * i / g.dim));
  DeviceBuffer d_pos = to_device(ops, std::vector<int64_t>{c.history}), d_freq = to_device(ops, inv_freq);
  DeviceBuffer d_q(ops, nq * sizeof(float)), d_k(ops, nkv * sizeof(float)), d_v(ops, nkv * sizeof(float));
  DeviceBuffer d_h(ops, c.inter * sizeof(float)), d_qkv(ops, (nq + 2 * nkv) * sizeof(float));
  in.x.upload(in.x0.data(), in.x.bytes());
  ops.set_step(s.view(), s.batch());
  CudaBackendOps::NextRope rope{c.next_layer, g.heads, d_pos.as<int64_t>(), d_freq.as<float>(), c.interleaved,
                                d_q.as<float>(), d_k.as<float>(), d_v.as<float>()};
  const CudaBackendOps::NextProjection next{&in.m_wqkv, c.bias ? in.bias.as<float>() : nullptr,
                                            in.next_norm.as<float>(), fused ? &rope : nullptr};
  ChainPass out;
  out.chained = ops.decode_chain(in.m_wo, in.m_wgu, in.m_wd, in.mlp_norm.as<float>(), next, 1e-5, 1,
                                 in.attn.as<float>(), in.x.as<float>(), d_h.as<float>(), d_qkv.as<float>());
  out.took_rope = rope.done;
  if (!fused)
    ops.split_qkv_rope_kv_write(c.next_layer, d_qkv.as<float>(), 1, g.heads, g.kv_heads, g.dim, d_pos.as<int64_t>(),
                                d_freq.as<float>(), c.interleaved, d_q.as<float>(), d_k.as<float>(), d_v.as<float>());
  out.x = to_host<float>(in.x, static_cast<size_t>(c.hidden));
  out.q = to_host<float>(d_q, static_cast<size_t>(nq));
  out.k = to_host<float>(d_k, static_cast<size_t>(nkv));
  out.v = to_host<float>(d_v, static_cast<size_t>(nkv));
  out.pool = s.download_pool();
  return out;
}

void chain_rope_case(CudaBackendOps& ops, Reporter& report, const ChainRopeSpec& c, uint64_t seed) {
  ChainInputs in = chain_inputs(ops, c, seed);
  const ChainPass two = chain_pass(ops, c, in, seed + 1, false);
  const ChainPass one = chain_pass(ops, c, in, seed + 1, true);
  std::string note;
  if (!two.chained || !one.chained) note = "the chain did not run";
  else if (!one.took_rope) note = "the chain did not take the RoPE and KV write";
  else if (one.pool != two.pool) note = "pool bytes differ";
  double err = 0;
  for (auto [a, b] : {std::pair{&one.x, &two.x}, {&one.q, &two.q}, {&one.k, &two.k}, {&one.v, &two.v}})
    err = std::max(err, max_rel_err(a->data(), b->data(), a->size()));
  report.result("decode_chain", c.describe() + " rope", ops.name(), err, 0.0, note);
}

}  // namespace

void run_chain_cases(BackendOps& ops, Reporter& report) {
  auto* cuda = dynamic_cast<CudaBackendOps*>(&ops);
  if (cuda == nullptr || !report.wants("decode_chain")) return;
  uint64_t seed = 5000;
  for (const ChainRopeSpec& c : kSpecs) chain_rope_case(*cuda, report, c, seed += 10);
}

#else

void run_chain_cases(BackendOps&, Reporter&) {}

#endif

}  // namespace podkv::backend_test
