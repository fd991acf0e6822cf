// Every training op's backward against central finite differences, in double.
//
// Each check takes a random linear read-out R of the op's output, L = Σ R·out,
// and compares the analytic ∂L/∂input of every input element with
// (L(x + ε) - L(x - ε)) / 2ε, ε = 1e-6. In double the difference has a
// truncation error ~ε²·L''' and a rounding error ~1e-16·|L|/ε, both far below
// the tolerance: max |numeric - analytic| <= 1e-7 · max(1, max |analytic|).
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "train/ops.h"

namespace podkv::train {
namespace {

using Vec = std::vector<double>;

constexpr double kEps = 1e-6;
constexpr double kTolerance = 1e-7;

Vec random_vec(size_t n, std::mt19937& rng, double scale = 1.0) {
  std::normal_distribution<double> dist(0.0, scale);
  Vec v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Max |numeric - analytic| / max(1, max |analytic|) over every element of x.
double gradient_error(Vec& x, const std::function<double()>& loss, const Vec& analytic) {
  EXPECT_EQ(x.size(), analytic.size());
  double max_err = 0, max_abs = 1;
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + kEps;
    const double up = loss();
    x[i] = keep - kEps;
    const double down = loss();
    x[i] = keep;
    max_err = std::max(max_err, std::fabs((up - down) / (2 * kEps) - analytic[i]));
    max_abs = std::max(max_abs, std::fabs(analytic[i]));
  }
  return max_err / max_abs;
}

TEST(TrainOps, LinearBackward) {
  std::mt19937 rng(1);
  const int64_t n = 5, in = 7, out = 3;
  Vec x = random_vec(n * in, rng), w = random_vec(out * in, rng), b = random_vec(out, rng), r = random_vec(n * out, rng);
  auto loss = [&] {
    Vec y(n * out);
    linear_forward(x.data(), w.data(), b.data(), n, in, out, y.data());
    return dot(y, r);
  };
  Vec dx(n * in, 0), dw(out * in, 0), db(out, 0);
  linear_backward(r.data(), x.data(), w.data(), n, in, out, dx.data(), dw.data(), db.data());
  EXPECT_LT(gradient_error(x, loss, dx), kTolerance);
  EXPECT_LT(gradient_error(w, loss, dw), kTolerance);
  EXPECT_LT(gradient_error(b, loss, db), kTolerance);
}

TEST(TrainOps, EmbeddingBackward) {
  std::mt19937 rng(2);
  const int64_t vocab = 6, dim = 4;
  const std::vector<int32_t> tokens = {3, 1, 3, 5, 0, 3};
  const int64_t n = static_cast<int64_t>(tokens.size());
  Vec table = random_vec(vocab * dim, rng), r = random_vec(n * dim, rng);
  auto loss = [&] {
    Vec y(n * dim);
    embedding_forward(table.data(), tokens.data(), n, dim, y.data());
    return dot(y, r);
  };
  Vec dtable(vocab * dim, 0);
  embedding_backward(r.data(), tokens.data(), n, dim, dtable.data());
  EXPECT_LT(gradient_error(table, loss, dtable), kTolerance);
}

TEST(TrainOps, RmsNormBackward) {
  std::mt19937 rng(3);
  const int64_t n = 4, dim = 9;
  Vec x = random_vec(n * dim, rng), w = random_vec(dim, rng), r = random_vec(n * dim, rng);
  auto loss = [&] {
    Vec y(n * dim), inv(n);
    rmsnorm_forward(x.data(), w.data(), n, dim, 1e-5, y.data(), inv.data());
    return dot(y, r);
  };
  Vec y(n * dim), inv(n), dx(n * dim, 0), dw(dim, 0);
  rmsnorm_forward(x.data(), w.data(), n, dim, 1e-5, y.data(), inv.data());
  rmsnorm_backward(r.data(), x.data(), w.data(), inv.data(), n, dim, dx.data(), dw.data());
  EXPECT_LT(gradient_error(x, loss, dx), kTolerance);
  EXPECT_LT(gradient_error(w, loss, dw), kTolerance);
}

TEST(TrainOps, RopeBackward) {
  std::mt19937 rng(4);
  const int64_t seq = 5, batch = 2, n = seq * batch;
  const int heads = 3, dim = 8;
  const std::vector<float> inv_freq = {1.0f, 0.3f, 0.1f, 0.01f};
  Vec cos_t, sin_t;
  rope_tables<double>(inv_freq, seq, cos_t, sin_t);
  for (bool interleaved : {false, true}) {
    Vec x = random_vec(n * heads * dim, rng), r = random_vec(n * heads * dim, rng);
    auto loss = [&] {
      Vec y = x;
      rope_forward(y.data(), n, seq, heads, dim, cos_t.data(), sin_t.data(), interleaved);
      return dot(y, r);
    };
    Vec dx = r;
    rope_backward(dx.data(), n, seq, heads, dim, cos_t.data(), sin_t.data(), interleaved);
    EXPECT_LT(gradient_error(x, loss, dx), kTolerance) << "interleaved " << interleaved;
  }
}

TEST(TrainOps, SwigluBackward) {
  std::mt19937 rng(5);
  const int64_t n = 17;
  Vec g = random_vec(n, rng, 2.0), u = random_vec(n, rng), r = random_vec(n, rng);
  auto loss = [&] {
    Vec h(n);
    swiglu_forward(g.data(), u.data(), n, h.data());
    return dot(h, r);
  };
  Vec dg(n, 0), du(n, 0);
  swiglu_backward(r.data(), g.data(), u.data(), n, dg.data(), du.data());
  EXPECT_LT(gradient_error(g, loss, dg), kTolerance);
  EXPECT_LT(gradient_error(u, loss, du), kTolerance);
}

TEST(TrainOps, CrossEntropyBackward) {
  std::mt19937 rng(6);
  const int64_t n = 6, vocab = 11;
  const std::vector<int32_t> targets = {3, -1, 0, 10, -1, 7};
  Vec logits = random_vec(n * vocab, rng, 3.0);
  const double scale = 0.25;
  auto loss = [&] { return scale * cross_entropy<double>(logits.data(), targets.data(), n, vocab, 0.0, nullptr); };
  Vec grad(n * vocab);
  int64_t correct = -1;
  const double total = cross_entropy<double>(logits.data(), targets.data(), n, vocab, scale, grad.data(), &correct);
  EXPECT_NEAR(total * scale, loss(), 1e-12);
  EXPECT_GE(correct, 0);
  EXPECT_LT(gradient_error(logits, loss, grad), kTolerance);
}

// Dense heads and PoD heads in one layer: KV head 0 reads distant keys from a
// separate "anchor" buffer, KV head 1 is dense. The gradient of the anchor's
// keys must be exactly what flows through the distant positions.
TEST(TrainOps, AttentionBackwardDenseAndPod) {
  std::mt19937 rng(7);
  AttentionShape s;
  s.batch = 2, s.seq = 11, s.heads = 4, s.kv_heads = 2, s.dim = 4, s.sink = 2, s.recent = 3;
  const int64_t n = s.batch * s.seq, qs = n * s.heads * s.dim, ks = n * s.kv_heads * s.dim;
  Vec q = random_vec(qs, rng), k = random_vec(ks, rng), kd = random_vec(ks, rng), v = random_vec(ks, rng),
      r = random_vec(qs, rng);
  auto run = [&](Vec& out, Vec& probs) {
    const double* distant[2] = {kd.data(), k.data()};
    out.assign(qs, 0);
    probs.assign(s.batch * s.heads * s.seq * s.seq, 0);
    attention_forward(s, q.data(), k.data(), distant, v.data(), probs.data(), out.data());
  };
  auto loss = [&] {
    Vec out, probs;
    run(out, probs);
    return dot(out, r);
  };
  Vec out, probs;
  run(out, probs);
  Vec dq(qs, 0), dk(ks, 0), dkd(ks, 0), dv(ks, 0);
  const double* distant[2] = {kd.data(), k.data()};
  double* distant_grad[2] = {dkd.data(), dk.data()};
  attention_backward(s, r.data(), q.data(), k.data(), distant, v.data(), probs.data(), dq.data(), dk.data(),
                     distant_grad, dv.data());
  EXPECT_LT(gradient_error(q, loss, dq), kTolerance);
  EXPECT_LT(gradient_error(k, loss, dk), kTolerance);
  EXPECT_LT(gradient_error(kd, loss, dkd), kTolerance);
  EXPECT_LT(gradient_error(v, loss, dv), kTolerance);
  // Only distant positions of KV head 0 reach the anchor's keys.
  double anchor_head1 = 0, anchor_head0 = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d < s.dim; ++d) {
      anchor_head0 += std::fabs(dkd[(i * 2 + 0) * s.dim + d]);
      anchor_head1 += std::fabs(dkd[(i * 2 + 1) * s.dim + d]);
    }
  EXPECT_GT(anchor_head0, 0);
  EXPECT_EQ(anchor_head1, 0);
}

// A window that covers every position makes PoD attention dense, whatever the anchor's keys.
TEST(TrainOps, AttentionPodWithWideWindowIsDense) {
  std::mt19937 rng(8);
  AttentionShape s;
  s.batch = 1, s.seq = 9, s.heads = 2, s.kv_heads = 1, s.dim = 8, s.sink = 0, s.recent = 9;
  const int64_t qs = s.seq * s.heads * s.dim, ks = s.seq * s.dim;
  Vec q = random_vec(qs, rng), k = random_vec(ks, rng), kd = random_vec(ks, rng), v = random_vec(ks, rng);
  Vec dense(qs), pod(qs), probs(s.heads * s.seq * s.seq);
  attention_forward<double>(s, q.data(), k.data(), nullptr, v.data(), probs.data(), dense.data());
  const double* distant[1] = {kd.data()};
  attention_forward(s, q.data(), k.data(), distant, v.data(), probs.data(), pod.data());
  for (int64_t i = 0; i < qs; ++i) EXPECT_DOUBLE_EQ(dense[i], pod[i]);
  s.recent = 2;  // now distant positions exist and the output changes
  attention_forward(s, q.data(), k.data(), distant, v.data(), probs.data(), pod.data());
  double diff = 0;
  for (int64_t i = 0; i < qs; ++i) diff += std::fabs(dense[i] - pod[i]);
  EXPECT_GT(diff, 1e-6);
}

// float and double agree to float rounding (the float path is what trains).
TEST(TrainOps, AttentionFloatMatchesDouble) {
  std::mt19937 rng(9);
  AttentionShape s;
  s.batch = 2, s.seq = 33, s.heads = 4, s.kv_heads = 2, s.dim = 16, s.sink = 3, s.recent = 7;
  const int64_t qs = s.batch * s.seq * s.heads * s.dim, ks = s.batch * s.seq * s.kv_heads * s.dim;
  Vec q = random_vec(qs, rng), k = random_vec(ks, rng), kd = random_vec(ks, rng), v = random_vec(ks, rng);
  Vec out(qs), probs(s.batch * s.heads * s.seq * s.seq);
  const double* distant[2] = {kd.data(), k.data()};
  attention_forward(s, q.data(), k.data(), distant, v.data(), probs.data(), out.data());
  std::vector<float> qf(q.begin(), q.end()), kf(k.begin(), k.end()), kdf(kd.begin(), kd.end()), vf(v.begin(), v.end());
  std::vector<float> outf(qs), probsf(probs.size());
  const float* distant_f[2] = {kdf.data(), kf.data()};
  attention_forward(s, qf.data(), kf.data(), distant_f, vf.data(), probsf.data(), outf.data());
  for (int64_t i = 0; i < qs; ++i) EXPECT_NEAR(outf[i], out[i], 1e-5);
}

}  // namespace
}  // namespace podkv::train
