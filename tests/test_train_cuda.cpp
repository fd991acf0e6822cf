// The GPU trainer against the CPU trainer (its oracle, itself checked against
// finite differences and PyTorch): each training kernel forward and backward
// over odd sizes, then a whole step's loss and every parameter's gradient on
// random models (dense, GQA, MQA, biases, tied embeddings, PoD with head-wise
// blocks), then whole training runs of a few steps through the Trainer.
// Skips when built without CUDA or when no GPU is visible (CI).
//
// Tolerances. f32 matrix products: loss relative 1e-5, gradients
// max |Δ| / max |cpu| per tensor 1e-4 (different summation orders only).
// bf16 matrix products (inputs rounded to 8 bits of mantissa, float32
// accumulation): loss relative 1e-2, gradients 5e-2 per tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "cli_run.h"
#include "kv/pod_config.h"
#include "train/ops.h"
#include "train/train_device.h"
#include "train/trainer.h"
#include "util/error.h"

#if defined(PODKV_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "cuda/train_kernels.h"
#endif

namespace podkv::train {
namespace {

bool have_gpu() {
#if defined(PODKV_HAVE_CUDA)
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
  return false;
#endif
}

#define SKIP_WITHOUT_GPU()                                                           \
  do {                                                                               \
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or built without PODKV_CUDA)"; \
  } while (0)

[[maybe_unused]] std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// max |a − b| / max |b| (b the reference).
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    ref = std::max(ref, static_cast<double>(std::fabs(b[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

#if defined(PODKV_HAVE_CUDA)

// bf16 bits of x, rounded to nearest even (finite values and infinities).
uint16_t bf16_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

std::vector<uint16_t> bf16_bits(const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = bf16_bits(x[i]);
  return out;
}

// A device copy of a host vector, freed at scope exit.
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<T>& host) : n(host.size()) {
    cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(1, n) * sizeof(T));
    cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  std::vector<T> get() const {
    std::vector<T> host(n);
    cudaDeviceSynchronize();
    cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
  }
};

TEST(TrainCudaOps, RmsNormForwardBackward) {
  SKIP_WITHOUT_GPU();
  for (int64_t dim : {1, 7, 100, 1000}) {
    const int64_t n = 37;
    const auto x = random_floats(n * dim, 1), w = random_floats(dim, 2), dy = random_floats(n * dim, 3);
    std::vector<float> y(n * dim), r(n), dx = random_floats(n * dim, 4), dw = random_floats(dim, 5);
    DeviceBuffer<float> gx(x), gw(w), gdy(dy), gy(y), gr(r), gdx(dx), gdw(dw);
    DeviceBuffer<float> scratch(std::vector<float>(cuda::train::column_scratch_floats(n, dim)));
    rmsnorm_forward(x.data(), w.data(), n, dim, 1e-5, y.data(), r.data());
    rmsnorm_backward(dy.data(), x.data(), w.data(), r.data(), n, dim, dx.data(), dw.data());
    cuda::train::rmsnorm_forward(gx.ptr, gw.ptr, n, dim, 1e-5, gy.ptr, gr.ptr, nullptr);
    cuda::train::rmsnorm_backward(gdy.ptr, gx.ptr, gw.ptr, gr.ptr, n, dim, gdx.ptr, gdw.ptr, scratch.ptr, nullptr);
    EXPECT_LT(relative_error(gy.get(), y), 1e-5) << "dim " << dim;
    EXPECT_LT(relative_error(gr.get(), r), 1e-5) << "dim " << dim;
    EXPECT_LT(relative_error(gdx.get(), dx), 1e-5) << "dim " << dim;
    EXPECT_LT(relative_error(gdw.get(), dw), 1e-5) << "dim " << dim;
    // The bf16 output alone (the input of bf16 products): the float32 output, rounded.
    DeviceBuffer<uint16_t> gy16{std::vector<uint16_t>(n * dim)};
    cuda::train::rmsnorm_forward(gx.ptr, gw.ptr, n, dim, 1e-5, nullptr, gr.ptr, nullptr, gy16.ptr);
    EXPECT_EQ(gy16.get(), bf16_bits(gy.get())) << "dim " << dim;
  }
}

TEST(TrainCudaOps, ColumnSums) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : {1, 255, 257, 1000}) {
    const int64_t dim = 33;
    const auto a = random_floats(n * dim, 6);
    std::vector<float> out = random_floats(dim, 7), expected = out;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < dim; ++j) expected[j] += a[i * dim + j];
    DeviceBuffer<float> ga(a), gout(out), scratch(std::vector<float>(cuda::train::column_scratch_floats(n, dim)));
    cuda::train::column_sums(ga.ptr, n, dim, gout.ptr, scratch.ptr, nullptr);
    EXPECT_LT(relative_error(gout.get(), expected), 1e-5) << "rows " << n;
  }
}

TEST(TrainCudaOps, RopeBothLayouts) {
  SKIP_WITHOUT_GPU();
  for (bool interleaved : {false, true}) {
    const int64_t seq = 13, n = 2 * seq;
    const int heads = 3, dim = 10;
    std::vector<float> inv_freq(dim / 2);
    for (int i = 0; i < dim / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / dim);
    std::vector<float> cos_t, sin_t;
    rope_tables<float>(inv_freq, seq, cos_t, sin_t);
    auto x = random_floats(n * heads * dim, 8), dx = random_floats(n * heads * dim, 9);
    DeviceBuffer<float> gx(x), gdx(dx), gc(cos_t), gs(sin_t);
    rope_forward(x.data(), n, seq, heads, dim, cos_t.data(), sin_t.data(), interleaved);
    rope_backward(dx.data(), n, seq, heads, dim, cos_t.data(), sin_t.data(), interleaved);
    cuda::train::rope(gx.ptr, n, seq, heads, dim, gc.ptr, gs.ptr, interleaved, 1.0f, nullptr);
    cuda::train::rope(gdx.ptr, n, seq, heads, dim, gc.ptr, gs.ptr, interleaved, -1.0f, nullptr);
    EXPECT_LT(relative_error(gx.get(), x), 1e-6);
    EXPECT_LT(relative_error(gdx.get(), dx), 1e-6);
  }
}

TEST(TrainCudaOps, SwiGluAndEmbedding) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 1001;
  const auto gate = random_floats(n, 10, 3.0f), up = random_floats(n, 11), dh = random_floats(n, 12);
  std::vector<float> h(n), dgate = random_floats(n, 13), dup = random_floats(n, 14);
  DeviceBuffer<float> gg(gate), gu(up), gdh(dh), gh(h), gdg(dgate), gdu(dup);
  swiglu_forward(gate.data(), up.data(), n, h.data());
  swiglu_backward(dh.data(), gate.data(), up.data(), n, dgate.data(), dup.data());
  cuda::train::swiglu_forward(gg.ptr, gu.ptr, n, gh.ptr, nullptr);
  cuda::train::swiglu_backward(gdh.ptr, gg.ptr, gu.ptr, n, gdg.ptr, gdu.ptr, nullptr);
  EXPECT_LT(relative_error(gh.get(), h), 1e-6);
  EXPECT_LT(relative_error(gdg.get(), dgate), 1e-6);
  EXPECT_LT(relative_error(gdu.get(), dup), 1e-6);
  // accumulate = false overwrites: the CPU's gradients from zero.
  std::vector<float> dgate0(n), dup0(n);
  swiglu_backward(dh.data(), gate.data(), up.data(), n, dgate0.data(), dup0.data());
  cuda::train::swiglu_backward(gdh.ptr, gg.ptr, gu.ptr, n, gdg.ptr, gdu.ptr, nullptr, /*accumulate=*/false);
  EXPECT_LT(relative_error(gdg.get(), dgate0), 1e-6);
  EXPECT_LT(relative_error(gdu.get(), dup0), 1e-6);
  // The bf16 outputs alone: the float32 ones, rounded.
  DeviceBuffer<uint16_t> gh16{std::vector<uint16_t>(n)}, gdg16{std::vector<uint16_t>(n)}, gdu16{std::vector<uint16_t>(n)};
  cuda::train::swiglu_forward(gg.ptr, gu.ptr, n, nullptr, nullptr, gh16.ptr);
  cuda::train::swiglu_backward(gdh.ptr, gg.ptr, gu.ptr, n, nullptr, nullptr, nullptr, false, gdg16.ptr, gdu16.ptr);
  EXPECT_EQ(gh16.get(), bf16_bits(gh.get()));
  EXPECT_EQ(gdg16.get(), bf16_bits(gdg.get()));
  EXPECT_EQ(gdu16.get(), bf16_bits(gdu.get()));

  const int64_t vocab = 17, dim = 9, rows = 50;  // repeated tokens: the backward adds into shared rows
  const auto table = random_floats(vocab * dim, 15), dout = random_floats(rows * dim, 16);
  std::vector<int32_t> tokens(rows);
  for (int64_t i = 0; i < rows; ++i) tokens[i] = static_cast<int32_t>((i * 7) % vocab);
  std::vector<float> out(rows * dim), dtable = random_floats(vocab * dim, 17);
  DeviceBuffer<float> gt(table), gd(dout), go(out), gdt(dtable);
  DeviceBuffer<int32_t> gtok(tokens);
  embedding_forward(table.data(), tokens.data(), rows, dim, out.data());
  embedding_backward(dout.data(), tokens.data(), rows, dim, dtable.data());
  cuda::train::embedding_forward(gt.ptr, gtok.ptr, rows, dim, go.ptr, nullptr);
  cuda::train::embedding_backward(gd.ptr, gtok.ptr, rows, dim, gdt.ptr, nullptr);
  EXPECT_EQ(go.get(), out);
  EXPECT_LT(relative_error(gdt.get(), dtable), 1e-6);
}

// bf16 rounding to nearest even, as the host's bf16 conversion (util/dtype.h), on
// lengths with and without the 8-wide path, including ties, infinities and tiny values.
TEST(TrainCudaOps, ToBf16RoundsToNearestEven) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : {1, 7, 8, 1000, 1003}) {
    auto x = random_floats(n, 30 + static_cast<uint32_t>(n), 100.0f);
    if (n > 4) x[0] = INFINITY, x[1] = -1e-30f, x[2] = 1.00390625f /* a tie: 1 + 2^-8 */, x[3] = 65504.5f;
    DeviceBuffer<float> gx(x);
    DeviceBuffer<uint16_t> gout{std::vector<uint16_t>(n)};
    cuda::train::to_bf16(gx.ptr, n, gout.ptr, nullptr);
    const std::vector<uint16_t> got = gout.get();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], bf16_bits(x[i])) << "n " << n << " value " << x[i];
  }
}

TEST(TrainCudaOps, CrossEntropy) {
  SKIP_WITHOUT_GPU();
  for (int64_t vocab : {2, 1003, 32000}) {
    const int64_t rows = 9;
    const auto logits = random_floats(rows * vocab, 18, 4.0f);
    std::vector<int32_t> targets(rows);
    for (int64_t i = 0; i < rows; ++i) targets[i] = i % 4 == 3 ? -1 : static_cast<int32_t>((i * 131) % vocab);
    std::vector<float> grad(rows * vocab);
    int64_t correct = 0;
    const double loss = cross_entropy(logits.data(), targets.data(), rows, vocab, 0.25, grad.data(), &correct);
    DeviceBuffer<float> gl(logits);
    DeviceBuffer<int32_t> gtar(targets);
    DeviceBuffer<double> stats(std::vector<double>(3, 0.0));
    cuda::train::cross_entropy(gl.ptr, gtar.ptr, rows, vocab, 0.25f, true, stats.ptr, nullptr);
    const std::vector<double> s = stats.get();
    EXPECT_NEAR(s[0], loss, 1e-5 * std::fabs(loss)) << "vocab " << vocab;
    EXPECT_EQ(s[1], 7.0);
    EXPECT_EQ(s[2], static_cast<double>(correct));
    EXPECT_LT(relative_error(gl.get(), grad), 1e-5) << "vocab " << vocab;
  }
}

TEST(TrainCudaOps, AdamWAndClip) {
  SKIP_WITHOUT_GPU();
  const size_t n = 3001;
  std::vector<float> params = random_floats(n, 19), grads = random_floats(n, 20, 5.0f);
  const std::vector<ParamRange> ranges = {{0, 1000, true}, {1500, 1501, false}};
  AdamWOptions o;
  AdamW cpu(n, o);
  std::vector<float> p_cpu = params, g_cpu = grads;
  const double norm = clip_by_global_norm(g_cpu.data(), ranges, 1.0);
  for (int step = 0; step < 3; ++step) cpu.step(p_cpu.data(), g_cpu.data(), ranges, 1e-2);

  DeviceBuffer<float> gp(params), gg(grads), gm{std::vector<float>(n)}, gv{std::vector<float>(n)};
  DeviceBuffer<double> sum(std::vector<double>(1, 0.0));
  for (const ParamRange& r : ranges) cuda::train::sum_squares(gg.ptr + r.offset, r.size, sum.ptr, nullptr);
  const double gpu_norm = std::sqrt(sum.get()[0]);
  EXPECT_NEAR(gpu_norm, norm, 1e-9 * norm);
  for (const ParamRange& r : ranges) cuda::train::scale(gg.ptr + r.offset, r.size, static_cast<float>(1.0 / norm), nullptr);
  for (int step = 1; step <= 3; ++step) {
    cuda::train::AdamWStep s;
    s.beta1 = static_cast<float>(o.beta1), s.beta2 = static_cast<float>(o.beta2), s.eps = static_cast<float>(o.eps);
    s.step_size = 1e-2f / static_cast<float>(1.0 - std::pow(o.beta1, step));
    s.correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(o.beta2, step)));
    for (const ParamRange& r : ranges) {
      s.decay = r.decay ? static_cast<float>(1.0 - 1e-2 * o.weight_decay) : 1.0f;
      cuda::train::adamw(gp.ptr + r.offset, gg.ptr + r.offset, gm.ptr + r.offset, gv.ptr + r.offset, r.size, s, nullptr);
    }
  }
  EXPECT_LT(relative_error(gp.get(), p_cpu), 1e-5);
}

#endif  // PODKV_HAVE_CUDA

// ---- whole steps ----

struct ModelCase {
  const char* name;
  int heads, kv_heads;
  bool bias, tied;
  int pod_group;            // 0 = dense
  int head_dim = 12;        // 64 and 128 take the fused (flash) attention with bf16 products
  int64_t seq = 37;
  int sink = 3, recent = 7;
};

void PrintTo(const ModelCase& m, std::ostream* os) { *os << m.name; }

ModelConfig case_config(const ModelCase& m) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 101, c.hidden_size = 48, c.intermediate_size = 72, c.num_layers = 4;
  c.num_heads = m.heads, c.num_kv_heads = m.kv_heads, c.head_dim = m.head_dim;
  c.attention_bias = m.bias, c.tie_word_embeddings = m.tied;
  c.rms_norm_eps = 1e-5, c.max_position_embeddings = 256;
  return c;
}

void random_tokens(int64_t n, int vocab, uint32_t seed, std::vector<int32_t>& tokens, std::vector<int32_t>& targets) {
  std::mt19937 rng(seed);
  tokens.resize(n), targets.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    tokens[i] = static_cast<int32_t>(rng() % vocab);
    targets[i] = rng() % 5 == 0 ? -1 : static_cast<int32_t>(rng() % vocab);
  }
}

class TrainCudaStep : public ::testing::TestWithParam<ModelCase> {};

TEST_P(TrainCudaStep, LossAndGradientsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  const ModelCase& mc = GetParam();
  const ModelConfig c = case_config(mc);
  Transformer<float> model(c);
  model.init_random(3, 0.08);
  PodConfig pod;
  if (mc.pod_group > 0) {
    // Head-wise blocks: KV head 0 in blocks of pod_group layers, the others
    // with anchors 0 and 1 (one block of layers 1..3), when there are others.
    pod = uniform_pod_config(c.num_layers, c.num_kv_heads, mc.pod_group, mc.sink, mc.recent);
    for (int h = 1; h < c.num_kv_heads; ++h) pod.anchors[h] = {0, 1};
    model.set_pod(&pod);
  }
  const int64_t batch = 3, seq = mc.seq;
  std::vector<int32_t> tokens, targets;
  random_tokens(batch * seq, c.vocab_size, 21, tokens, targets);
  model.zero_grads();
  const double grad_scale = 1.0 / static_cast<double>(batch * seq);
  const LossStats cpu = model.forward_backward(tokens.data(), targets.data(), batch, seq, grad_scale);
  const std::vector<float> cpu_grads = model.grads();
  for (MatmulPrecision precision : {MatmulPrecision::F32, MatmulPrecision::BF16}) {
    const bool f32 = precision == MatmulPrecision::F32;
    const double loss_tol = f32 ? 1e-5 : 1e-2, grad_tol = f32 ? 1e-4 : 5e-2;
    auto gpu = make_train_device("cuda", model, nullptr, precision);
    gpu->zero_grads();
    const LossStats g = gpu->forward_backward(tokens.data(), targets.data(), batch, seq, grad_scale);
    EXPECT_EQ(g.count, cpu.count);
    EXPECT_NEAR(g.loss_sum, cpu.loss_sum, loss_tol * cpu.loss_sum) << (f32 ? "f32" : "bf16");
    const std::vector<float> grads = gpu->gradients();
    for (const TensorInfo& t : model.tensors()) {
      const std::vector<float> a(grads.begin() + t.offset, grads.begin() + t.offset + t.size);
      const std::vector<float> b(cpu_grads.begin() + t.offset, cpu_grads.begin() + t.offset + t.size);
      EXPECT_LT(relative_error(a, b), grad_tol) << t.name << (f32 ? " f32" : " bf16");
    }
    // Forward only, with the logits.
    std::vector<float> logits(batch * seq * c.vocab_size), cpu_logits(logits.size());
    const LossStats fg = gpu->forward(tokens.data(), targets.data(), batch, seq, logits.data());
    model.forward(tokens.data(), targets.data(), batch, seq, cpu_logits.data());
    EXPECT_NEAR(fg.loss_sum, cpu.loss_sum, loss_tol * cpu.loss_sum);
    EXPECT_LT(relative_error(logits, cpu_logits), f32 ? 1e-5 : 2e-2);
    // Recomputation: the same step from each layer's input alone gives the same loss and gradients.
    auto again = make_train_device("cuda", model, nullptr, precision, /*recompute=*/true);
    again->zero_grads();
    const LossStats r = again->forward_backward(tokens.data(), targets.data(), batch, seq, grad_scale);
    EXPECT_NEAR(r.loss_sum, g.loss_sum, 1e-9 * std::fabs(g.loss_sum)) << (f32 ? "f32" : "bf16");
    EXPECT_LT(relative_error(again->gradients(), grads), 1e-6) << "recompute " << (f32 ? "f32" : "bf16");
  }
}

INSTANTIATE_TEST_SUITE_P(Models, TrainCudaStep,
                         ::testing::Values(ModelCase{"mha", 4, 4, false, false, 0},
                                           ModelCase{"gqa_bias_tied", 4, 2, true, true, 0},
                                           ModelCase{"mqa", 4, 1, false, true, 0},
                                           ModelCase{"pod_gqa", 4, 2, false, false, 2},
                                           ModelCase{"pod_mha_bias", 2, 2, true, false, 3},
                                           ModelCase{"pod_mqa", 3, 1, false, true, 4},
                                           // Fused attention: several 64-row tiles, windows across tile edges.
                                           ModelCase{"flash64_gqa", 4, 2, false, true, 0, 64, 150},
                                           ModelCase{"flash64_pod_gqa", 4, 2, true, false, 2, 64, 150, 5, 70},
                                           ModelCase{"flash64_pod_mha", 2, 2, false, true, 3, 64, 131, 1, 20},
                                           ModelCase{"flash128_pod_mqa", 4, 1, false, false, 2, 128, 100, 4, 33}),
                         [](const ::testing::TestParamInfo<ModelCase>& i) { return std::string(i.param.name); });

// The same short training run (AdamW, clipping, accumulation, warmup) on the
// CPU and the GPU from the same weights and batches: the losses of every step
// and the final weights agree.
TEST(TrainCudaRun, TenStepsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  const ModelConfig c = case_config({"run", 4, 2, false, false, 0, 12});
  std::vector<int32_t> stream, unused;
  random_tokens(4000, c.vocab_size, 23, stream, unused);
  for (size_t i = 1; i < stream.size(); ++i)  // some structure to learn: every third token repeats
    if (i % 3 == 0) stream[i] = stream[i - 1];
  Corpus corpus{std::vector<int32_t>(stream.begin(), stream.begin() + 3500),
                std::vector<int32_t>(stream.begin() + 3500, stream.end())};
  BatchSource source(&corpus, nullptr, 0.0, 5);
  std::vector<std::vector<double>> losses(2);
  std::vector<std::vector<float>> weights(2);
  const std::string dir = ::testing::TempDir() + "/train_cuda_run";
  for (int d = 0; d < 2; ++d) {
    Transformer<float> model(c);
    model.init_random(4, 0.05);
    TrainOptions o;
    o.steps = 10, o.batch = 3, o.grad_accum = 2, o.seq_len = 40, o.lr = 3e-3, o.warmup = 2, o.clip = 0.5;
    o.eval_batches = 1;
    o.out_dir = dir + (d == 0 ? "_cpu" : "_gpu");
    o.device = d == 0 ? "cpu" : "cuda";
    o.precision = MatmulPrecision::F32;
    Trainer trainer(model, source, {}, o);
    trainer.run([&](const StepReport& r) { losses[d].push_back(r.loss); }, nullptr);
    weights[d] = model.params();  // the GPU's, copied back for the final checkpoint
  }
  ASSERT_EQ(losses[0].size(), 10u);
  ASSERT_EQ(losses[1].size(), 10u);
  for (size_t i = 0; i < losses[0].size(); ++i) EXPECT_NEAR(losses[1][i], losses[0][i], 1e-4 * losses[0][i]) << "step " << i + 1;
  EXPECT_LT(losses[0].back(), losses[0].front());
  EXPECT_LT(relative_error(weights[1], weights[0]), 1e-3);
}

// A GPU run stopped after step 3 and resumed from its checkpoint ends with the
// weights of the uninterrupted run (the device state goes through the host
// model and optimiser at the save and back at the resume).
TEST(TrainCudaRun, ResumeEqualsUninterruptedRun) {
  SKIP_WITHOUT_GPU();
  const ModelConfig c = case_config({"resume", 4, 2, false, false, 2, 12});
  std::vector<int32_t> stream, unused;
  random_tokens(3000, c.vocab_size, 31, stream, unused);
  Corpus corpus{std::vector<int32_t>(stream.begin(), stream.begin() + 2500),
                std::vector<int32_t>(stream.begin() + 2500, stream.end())};
  BatchSource source(&corpus, nullptr, 0.0, 9);
  const PodConfig pod = uniform_pod_config(c.num_layers, c.num_kv_heads, 2, 2, 9);
  const std::string dir = ::testing::TempDir() + "/train_cuda_resume";
  auto options = [&](const std::string& out, int64_t stop_at) {
    TrainOptions o;
    o.steps = 6, o.batch = 2, o.seq_len = 33, o.lr = 3e-3, o.warmup = 1, o.eval_batches = 1;
    o.out_dir = out, o.stop_at = stop_at, o.device = "cuda", o.precision = MatmulPrecision::F32;
    return o;
  };
  std::vector<float> straight, resumed;
  {
    Transformer<float> model(c);
    model.init_random(8, 0.05);
    model.set_pod(&pod);
    Trainer trainer(model, source, {}, options(dir + "_straight", 0));
    trainer.run(nullptr, nullptr);
    straight = model.params();
  }
  {
    Transformer<float> model(c);
    model.init_random(8, 0.05);
    model.set_pod(&pod);
    Trainer first(model, source, {}, options(dir + "_resumed", 3));
    first.run(nullptr, nullptr);
  }
  {
    Transformer<float> model(c);
    model.init_random(99, 0.05);  // overwritten by the checkpoint
    model.set_pod(&pod);
    Trainer second(model, source, {}, options(dir + "_resumed", 0));
    second.resume(dir + "_resumed");
    EXPECT_EQ(second.start_step(), 3);
    second.run(nullptr, nullptr);
    resumed = model.params();
  }
  EXPECT_LT(relative_error(resumed, straight), 1e-5);
}

// The same with bf16 products and the fused attention (head_dim 64): the
// losses follow the CPU's within bf16 rounding.
TEST(TrainCudaRun, TenStepsBf16FollowTheCpu) {
  SKIP_WITHOUT_GPU();
  const ModelConfig c = case_config({"run", 4, 2, false, false, 0, 64});
  std::vector<int32_t> stream, unused;
  random_tokens(6000, c.vocab_size, 29, stream, unused);
  for (size_t i = 1; i < stream.size(); ++i)
    if (i % 3 == 0) stream[i] = stream[i - 1];
  Corpus corpus{std::vector<int32_t>(stream.begin(), stream.begin() + 5000),
                std::vector<int32_t>(stream.begin() + 5000, stream.end())};
  BatchSource source(&corpus, nullptr, 0.0, 5);
  PodConfig pod = uniform_pod_config(c.num_layers, c.num_kv_heads, 2, 4, 40);
  std::vector<std::vector<double>> losses(2);
  const std::string dir = ::testing::TempDir() + "/train_cuda_bf16";
  for (int d = 0; d < 2; ++d) {
    Transformer<float> model(c);
    model.init_random(4, 0.05);
    model.set_pod(&pod);
    TrainOptions o;
    o.steps = 10, o.batch = 2, o.seq_len = 130, o.lr = 3e-3, o.warmup = 2;
    o.eval_batches = 1;
    o.out_dir = dir + (d == 0 ? "_cpu" : "_gpu");
    o.device = d == 0 ? "cpu" : "cuda";
    o.precision = MatmulPrecision::BF16;
    Trainer trainer(model, source, {}, o);
    trainer.run([&](const StepReport& r) { losses[d].push_back(r.loss); }, nullptr);
  }
  ASSERT_EQ(losses[1].size(), 10u);
  for (size_t i = 0; i < losses[0].size(); ++i) EXPECT_NEAR(losses[1][i], losses[0][i], 2e-2 * losses[0][i]) << "step " << i + 1;
}

TEST(TrainCudaRun, UnknownDeviceAndPrecisionAreErrors) {
  const ModelConfig c = case_config({"err", 4, 2, false, false, 0});
  Transformer<float> model(c);
  EXPECT_THROW(make_train_device("tpu", model, nullptr), Error);
  EXPECT_THROW(parse_matmul_precision("fp8"), Error);
  EXPECT_THROW(make_train_device("cpu", model, nullptr, MatmulPrecision::BF16, /*recompute=*/true), Error);
  if (!have_gpu()) {
    EXPECT_THROW(make_train_device("cuda", model, nullptr), Error);
  }
}

// podkv train on the GPU through the CLI, in a fresh directory removed at the end.
class TrainCudaCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or built without PODKV_CUDA)";
    dir_ = std::filesystem::temp_directory_path() /
           ("podkv_train_cuda_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "io");
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // The 23.7M model on synthetic passkeys, one step unless `extra` says otherwise. `extra` holds
  // option-value pairs; one already set here replaces its value (CLI11 refuses an option given twice).
  clitest::CliResult train(const std::string& batch, const std::string& seq, const std::vector<std::string>& extra = {}) {
    EXPECT_EQ(extra.size() % 2, 0u) << "extra options come in pairs";
    std::vector<std::string> args = {
        "train", "--config", (clitest::kSourceDir / "configs/podkv-long-23m/config.json").string(), "--tokenizer",
        (clitest::kSourceDir / "models/podkv-ref").string(), "--synthetic", "passkey", "--synthetic-fraction", "1",
        "--steps", "1", "--batch", batch, "--seq-len", seq, "--eval-batches", "1", "--accuracy-samples", "1",
        "--device", "cuda", "--out", out().string()};
    for (size_t i = 0; i + 1 < extra.size(); i += 2) {
      const auto set = std::find(args.begin(), args.end(), extra[i]);
      if (set != args.end()) {
        *(set + 1) = extra[i + 1];
      } else {
        args.push_back(extra[i]);
        args.push_back(extra[i + 1]);
      }
    }
    return clitest::run_cli(args, dir_ / "io");
  }
  std::filesystem::path out() const { return dir_ / "out"; }
  // Exit 1 and, after the banner line if any, exactly one "error: " line naming `what`.
  static void expect_one_error_line(const clitest::CliResult& r, const std::string& what) {
    EXPECT_EQ(r.exit_code, 1) << r;
    const size_t at = r.err.find("error: ");
    ASSERT_NE(at, std::string::npos) << r;
    const std::string line = r.err.substr(at);
    EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << r;
    EXPECT_TRUE(line.ends_with("\n")) << r;
    EXPECT_NE(line.find(what), std::string::npos) << r;
  }
  std::filesystem::path dir_;
};

// GPU out of memory: a batch whose activations cannot fit (512 x 4096 tokens of
// the 23.7M model need about 670 GiB) ends with one line naming what did not
// fit, and the checkpoint an earlier run wrote into the same --out is untouched.
TEST_F(TrainCudaCli, OutOfMemoryIsOneLineAndKeepsTheCheckpoint) {
  const clitest::CliResult small = train("1", "128");
  ASSERT_EQ(small.exit_code, 0) << small;
  const std::string weights = clitest::read_text(out() / "model.safetensors");
  ASSERT_FALSE(weights.empty());
  const clitest::CliResult big = train("512", "4096");
  expect_one_error_line(big, "cannot allocate");
  EXPECT_NE(big.err.find("GiB"), std::string::npos) << big;
  EXPECT_NE(big.err.find("lower --batch or --seq-len"), std::string::npos) << big;
  EXPECT_EQ(clitest::read_text(out() / "model.safetensors"), weights);
}

// Bad input as on the CPU: a bad optimiser setting, a sequence longer than the
// model's context, a step that diverges (a learning rate of 1e30): one line,
// no checkpoint.
TEST_F(TrainCudaCli, BadInputFailsCleanly) {
  expect_one_error_line(train("2", "128", {"--beta1", "1.5"}), "--beta1");
  expect_one_error_line(train("2", "9000"), "--seq-len");
  expect_one_error_line(train("2", "128", {"--steps", "5", "--lr", "1e30", "--warmup", "0"}), "diverged");
  EXPECT_FALSE(std::filesystem::exists(out() / "model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(out().string() + ".tmp"));
}

}  // namespace
}  // namespace podkv::train
