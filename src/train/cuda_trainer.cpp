#include "train/cuda_trainer.h"

#if defined(PODKV_HAVE_CUDA)

#include <algorithm>
#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/train_kernels.h"
#include "train/ops.h"
#include "util/error.h"

namespace podkv::train {

namespace kern = cuda::train;

namespace {

// Rows of logits computed at once by the LM head and the loss (at least one row).
constexpr size_t kLogitsBudgetFloats = size_t{64} << 20;

cublasComputeType_t compute_type(MatmulPrecision p) {
  switch (p) {
    case MatmulPrecision::F32: return CUBLAS_COMPUTE_32F;
    case MatmulPrecision::TF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case MatmulPrecision::BF16: return CUBLAS_COMPUTE_32F_FAST_16BF;
  }
  return CUBLAS_COMPUTE_32F;
}

// Carves one device allocation into the buffers of a shape (256-byte aligned).
class Arena {
 public:
  template <typename T>
  T* take(size_t count) {
    const size_t offset = (used_ + 255) / 256 * 256;
    used_ = offset + count * sizeof(T);
    return reinterpret_cast<T*>(base_ + offset);
  }
  void reset(uint8_t* base) { base_ = base, used_ = 0; }
  size_t used() const { return used_; }

 private:
  uint8_t* base_ = nullptr;
  size_t used_ = 0;
};

}  // namespace

// Device buffers. Parameters, gradients and moments live as long as the
// trainer; activations are laid out per (batch, seq) in one allocation.
struct CudaTrainer::State {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  bool flash = false;  // fused bf16 attention (train_flash.cu) instead of materialised scores
  float *params = nullptr, *grads = nullptr, *m = nullptr, *v = nullptr;
  double* stats = nullptr;  // [4]: loss sum, count, correct; gradient sum of squares

  // Activations of one shape ([L] per layer), as the CPU's Activations.
  int64_t batch = 0, seq = 0, nb = 0, head_rows = 0;
  uint8_t* arena = nullptr;
  int32_t *tokens = nullptr, *targets = nullptr;
  float *cos_table = nullptr, *sin_table = nullptr;
  std::vector<float*> x_in, xn1, r1, q, k, v_act, attn, lse, x_mid, xn2, r2, gate, up, h, d_k;
  float *x_final = nullptr, *xn_final = nullptr, *r_final = nullptr, *logits = nullptr, *proj = nullptr;
  float *d_res = nullptr, *d_xn = nullptr, *d_attn = nullptr, *d_q = nullptr, *d_v = nullptr;
  float *d_h = nullptr, *d_gate = nullptr, *d_up = nullptr, *columns = nullptr;
  float *s1 = nullptr, *s2 = nullptr;
  float **anchor_k = nullptr, **anchor_dk = nullptr;  // [L · kv_heads]: the anchor layer's k and d_k
  // Flash path: each layer's keys in bf16 head-major (the anchors' are read by higher layers),
  // scratch q, v, dO in the same layout, the rows' Σ dO·O, the anchors' bf16 keys.
  std::vector<uint16_t*> k_bf16;
  uint16_t *q_bf16 = nullptr, *v_bf16 = nullptr, *dout_bf16 = nullptr;
  float* row_dot = nullptr;
  const uint16_t** anchor_k_bf16 = nullptr;
  // bf16 products (precision bf16): the weights' bf16 copy (refreshed after every optimiser
  // step), each layer's product inputs in bf16 (xn1, xn2, attn, h: also the weight
  // gradients' inputs), and a scratch for an output gradient in bf16.
  bool half = false;
  uint16_t* params16 = nullptr;
  // Recomputation: the per-layer activations other than x_in, k, lse, d_k and
  // the bf16 keys are one buffer shared by all layers, refilled per layer.
  bool recompute = false;
  // With bf16 products the kernels that make xn1, xn2, h, d_gate and d_up write
  // only their bf16 copies (their float32 buffers are empty).
  std::vector<uint16_t*> xn1_16, xn2_16, attn16, h16;
  uint16_t *dy16 = nullptr, *d_gate16 = nullptr, *d_up16 = nullptr;
  cuda::train::AttentionPointers ptrs;
  std::vector<int> anchors;  // of the uploaded tables

  // A product operand: float32, or its bf16 copy (then both operands are bf16 and
  // cuBLAS accumulates in float32).
  struct Operand {
    const void* data;
    cudaDataType type;
  };
  Operand operand(const float* f32, const uint16_t* bf16) const {
    return half ? Operand{bf16, CUDA_R_16BF} : Operand{f32, CUDA_R_32F};
  }
  // The buffer a kernel writes: the float32 one for float32 products, the bf16 one for bf16 products.
  float* f32(float* p) const { return half ? nullptr : p; }
  uint16_t* bf16(uint16_t* p) const { return half ? p : nullptr; }
  // bf16 copy of n values when the products are bf16.
  void convert(const float* x, int64_t n, uint16_t* out) const {
    if (half) kern::to_bf16(x, n, out, stream);
  }

  // y[rows, out] = x[rows, in] · W[out, in]ᵀ style row-major GEMM:
  // C[m, n] = alpha · op(A) · op(B) + beta · C (column-major cuBLAS on the transposes).
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, Operand a, int64_t lda, Operand b,
            int64_t ldb, float beta, float* c, int64_t ldc) const {
    const cublasComputeType_t type = a.type == CUDA_R_16BF ? CUBLAS_COMPUTE_32F : compute;
    PODKV_CUBLAS_CHECK(cublasGemmEx(blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b.data,
                                    b.type, static_cast<int>(ldb), a.data, a.type, static_cast<int>(lda), &beta, c,
                                    CUDA_R_32F, static_cast<int>(ldc), type, CUBLAS_GEMM_DEFAULT));
  }
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
            const float* b, int64_t ldb, float beta, float* c, int64_t ldc) const {
    gemm(ta, tb, m, n, k, alpha, Operand{a, CUDA_R_32F}, lda, Operand{b, CUDA_R_32F}, ldb, beta, c, ldc);
  }
  template <typename A, typename B, typename C>
  void gemm_batched(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, A** a, int64_t lda, B** b,
                    int64_t ldb, float beta, C** c, int64_t ldc, int64_t count) const {
    PODKV_CUBLAS_CHECK(cublasGemmBatchedEx(
        blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
        static_cast<int>(m), static_cast<int>(k), &alpha, reinterpret_cast<const void* const*>(b), CUDA_R_32F,
        static_cast<int>(ldb), reinterpret_cast<const void* const*>(a), CUDA_R_32F, static_cast<int>(lda), &beta,
        reinterpret_cast<void* const*>(c), CUDA_R_32F, static_cast<int>(ldc), static_cast<int>(count), compute,
        CUBLAS_GEMM_DEFAULT));
  }
  // y = x · Wᵀ (+ bias).
  void linear(Operand x, Operand w, const float* bias, int64_t n, int64_t in, int64_t out, float* y) const {
    gemm(false, true, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    if (bias != nullptr) cuda::add_bias(y, bias, n, out, stream);
  }
  // dx (+)= dy · W (beta 0 overwrites dx);  dw += dyᵀ · x;  dbias += Σ rows dy.
  // x and w as in the forward; dy float32, converted to bf16 here for bf16 products
  // unless its bf16 copy comes along (dy_bf16; dy may then be null when there is no bias).
  void linear_backward(const float* dy, Operand x, Operand w, int64_t n, int64_t in, int64_t out, float* dx,
                       float dx_beta, float* dw, float* dbias, const uint16_t* dy_bf16 = nullptr) const {
    if (dy_bf16 == nullptr) convert(dy, n * out, dy16);
    const Operand g = operand(dy, dy_bf16 != nullptr ? dy_bf16 : dy16);
    if (dx != nullptr) gemm(false, false, n, in, out, 1.0f, g, out, w, in, dx_beta, dx, in);
    if (dw != nullptr) gemm(true, false, out, in, n, 1.0f, g, out, x, in, 1.0f, dw, in);
    if (dbias != nullptr) kern::column_sums(dy, n, out, dbias, columns, stream);
  }
  // A weight of the model as a product operand (its bf16 copy for bf16 products).
  Operand weight(const Transformer<float>& model, TensorKind kind, int layer) const {
    const int i = model.tensor_index(kind, layer);
    check(i >= 0, "cuda trainer: the model has no such weight");
    const size_t offset = model.tensors()[i].offset;
    return operand(params + offset, params16 == nullptr ? nullptr : params16 + offset);
  }
  // The bf16 weights from the float32 ones.
  void refresh_weights16(size_t count) const { convert(params, static_cast<int64_t>(count), params16); }

  void free_activations() {
    cudaFree(arena);
    arena = nullptr;
    batch = seq = 0;
  }
};

namespace {

void upload(float* dst, const std::vector<float>& src, cudaStream_t stream) {
  PODKV_CUDA_CHECK(cudaMemcpyAsync(dst, src.data(), src.size() * sizeof(float), cudaMemcpyHostToDevice, stream));
}

void download(std::vector<float>& dst, const float* src, cudaStream_t stream) {
  PODKV_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src, dst.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
  PODKV_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace

CudaTrainer::CudaTrainer(Transformer<float>& model, AdamW* optimizer, MatmulPrecision precision, bool recompute)
    : TrainDevice(model, optimizer), s_(std::make_unique<State>()) {
  // The GPU trainer's kernels have no per-head q/k norm and take the softmax scale as 1 / sqrt(d).
  const ModelConfig& mc = model.config();
  if (mc.qk_norm)
    throw Error("--device cuda: training " + mc.architecture + " (per-head q/k norms) runs on the CPU only");
  if (mc.rope_scaling.type == RopeScalingType::Yarn)
    throw Error("--device cuda: training with YaRN rope scaling runs on the CPU only");
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) throw Error("--device cuda: no CUDA device is visible");
  State& s = *s_;
  s.compute = compute_type(precision);
  // float32 products keep the exact (materialised) attention: they are the oracle's arithmetic.
  s.flash = precision != MatmulPrecision::F32 && kern::flash_supported(model.config().head_dim);
  s.half = precision == MatmulPrecision::BF16;
  s.recompute = recompute;
  PODKV_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  PODKV_CUBLAS_CHECK(cublasCreate(&s.blas));
  PODKV_CUBLAS_CHECK(cublasSetStream(s.blas, s.stream));
  const size_t p = model.params().size();
  s.params = static_cast<float*>(cuda::device_alloc(p * sizeof(float), "the training parameters"));
  s.grads = static_cast<float*>(cuda::device_alloc(p * sizeof(float), "the training gradients"));
  if (s.half) s.params16 = static_cast<uint16_t*>(cuda::device_alloc(p * sizeof(uint16_t), "the bf16 weights"));
  if (optimizer_ != nullptr) {
    s.m = static_cast<float*>(cuda::device_alloc(p * sizeof(float), "the AdamW moments"));
    s.v = static_cast<float*>(cuda::device_alloc(p * sizeof(float), "the AdamW moments"));
  }
  s.stats = static_cast<double*>(cuda::device_alloc(4 * sizeof(double), "the loss statistics"));
  from_host();
  zero_grads();
}

CudaTrainer::~CudaTrainer() {
  State& s = *s_;
  if (s.stream != nullptr) cudaStreamSynchronize(s.stream);
  s.free_activations();
  for (void* ptr : {static_cast<void*>(s.params), static_cast<void*>(s.grads), static_cast<void*>(s.m),
                    static_cast<void*>(s.v), static_cast<void*>(s.stats), static_cast<void*>(s.params16)})
    cudaFree(ptr);
  if (s.blas != nullptr) cublasDestroy(s.blas);
  if (s.stream != nullptr) cudaStreamDestroy(s.stream);
}

void CudaTrainer::from_host() {
  State& s = *s_;
  upload(s.params, model_.params(), s.stream);
  if (optimizer_ != nullptr) {
    check(optimizer_->first_moment().size() == model_.params().size(), "cuda trainer: optimiser of another model");
    upload(s.m, optimizer_->first_moment(), s.stream);
    upload(s.v, optimizer_->second_moment(), s.stream);
  }
  s.refresh_weights16(model_.params().size());
  PODKV_CUDA_CHECK(cudaStreamSynchronize(s.stream));
}

void CudaTrainer::to_host() {
  State& s = *s_;
  download(model_.params(), s.params, s.stream);
  if (optimizer_ != nullptr) {
    download(optimizer_->first_moment(), s.m, s.stream);
    download(optimizer_->second_moment(), s.v, s.stream);
  }
}

std::vector<float> CudaTrainer::gradients() {
  std::vector<float> g(model_.params().size());
  download(g, s_->grads, s_->stream);
  return g;
}

void CudaTrainer::zero_grads() {
  PODKV_CUDA_CHECK(cudaMemsetAsync(s_->grads, 0, model_.params().size() * sizeof(float), s_->stream));
}

void CudaTrainer::run_forward(const int32_t* tokens, int64_t batch, int64_t seq) {
  const ModelConfig& c = model_.config();
  check(seq <= c.max_position_embeddings, "sequence of " + std::to_string(seq) +
                                              " tokens is longer than the model's context (max_position_embeddings " +
                                              std::to_string(c.max_position_embeddings) + ")");
  const int64_t n = batch * seq, hid = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  for (int64_t i = 0; i < n; ++i)
    check(tokens[i] >= 0 && tokens[i] < c.vocab_size, "token id " + std::to_string(tokens[i]) +
                                                          " is outside the vocabulary (" +
                                                          std::to_string(c.vocab_size) + " tokens)");
  State& s = *s_;
  const int L = c.num_layers, H = c.num_heads, Hkv = c.num_kv_heads;
  if (s.batch != batch || s.seq != seq) {
    s.free_activations();
    const size_t per_seq_scores = static_cast<size_t>(2 * H) * seq * seq * sizeof(float);
    s.nb = std::clamp<int64_t>(static_cast<int64_t>(kScoreBudgetBytes / per_seq_scores), 1, batch);
    s.head_rows = std::clamp<int64_t>(static_cast<int64_t>(kLogitsBudgetFloats / c.vocab_size), 1, n);
    const int64_t entries = s.flash ? 0 : s.nb * H;
    const size_t columns = kern::column_scratch_floats(n, std::max({hid, qd, kvd}));
    // Two passes: the first sizes the arena, the second hands out the buffers.
    for (int pass = 0; pass < 2; ++pass) {
      Arena a;
      a.reset(s.arena);
      // Per layer; with recomputation one buffer for all layers unless `kept`.
      auto layers = [&]<typename T>(std::vector<T*>& v, int64_t size, bool kept = false) {
        v.resize(L);
        T* shared = nullptr;
        for (T*& p : v) {
          if (kept || !s.recompute) p = a.take<T>(static_cast<size_t>(size));
          else p = shared != nullptr ? shared : (shared = a.take<T>(static_cast<size_t>(size)));
        }
      };
      s.tokens = a.take<int32_t>(n), s.targets = a.take<int32_t>(n);
      s.cos_table = a.take<float>(seq * (c.head_dim / 2)), s.sin_table = a.take<float>(seq * (c.head_dim / 2));
      const int64_t f32_rows = s.half ? 0 : n;  // of the activations that only feed products
      layers(s.x_in, n * hid, true), layers(s.xn1, f32_rows * hid), layers(s.r1, n);
      layers(s.q, n * qd), layers(s.k, n * kvd, true), layers(s.v_act, n * kvd), layers(s.attn, n * qd);
      layers(s.lse, batch * H * seq, true), layers(s.x_mid, n * hid), layers(s.xn2, f32_rows * hid), layers(s.r2, n);
      layers(s.gate, n * inter), layers(s.up, n * inter), layers(s.h, f32_rows * inter), layers(s.d_k, n * kvd, true);
      s.x_final = a.take<float>(n * hid), s.xn_final = a.take<float>(n * hid), s.r_final = a.take<float>(n);
      s.logits = a.take<float>(s.head_rows * c.vocab_size), s.proj = a.take<float>(n * hid);
      s.d_res = a.take<float>(n * hid), s.d_xn = a.take<float>(n * hid), s.d_attn = a.take<float>(n * qd);
      s.d_q = a.take<float>(n * qd), s.d_v = a.take<float>(n * kvd);
      s.d_h = a.take<float>(n * inter), s.d_gate = a.take<float>(f32_rows * inter), s.d_up = a.take<float>(f32_rows * inter);
      s.columns = a.take<float>(columns);
      const int64_t half_rows = s.half ? n : 0;
      layers(s.xn1_16, half_rows * hid), layers(s.xn2_16, half_rows * hid), layers(s.attn16, half_rows * qd);
      layers(s.h16, half_rows * inter);
      s.dy16 = a.take<uint16_t>(static_cast<size_t>(half_rows * std::max({hid, qd, kvd, inter})));
      s.d_gate16 = a.take<uint16_t>(static_cast<size_t>(half_rows * inter));
      s.d_up16 = a.take<uint16_t>(static_cast<size_t>(half_rows * inter));
      s.s1 = a.take<float>(static_cast<size_t>(entries) * seq * seq);
      s.s2 = a.take<float>(static_cast<size_t>(entries) * seq * seq);
      s.anchor_k = a.take<float*>(static_cast<size_t>(L) * Hkv), s.anchor_dk = a.take<float*>(static_cast<size_t>(L) * Hkv);
      if (s.flash) {
        s.k_bf16.resize(L);
        for (uint16_t*& p : s.k_bf16) p = a.take<uint16_t>(n * kvd);
        s.q_bf16 = a.take<uint16_t>(n * qd), s.v_bf16 = a.take<uint16_t>(n * kvd), s.dout_bf16 = a.take<uint16_t>(n * qd);
        s.row_dot = a.take<float>(n * H);
        s.anchor_k_bf16 = a.take<const uint16_t*>(static_cast<size_t>(L) * Hkv);
      }
      kern::AttentionPointers& p = s.ptrs;
      p.q = a.take<const float*>(entries), p.k = a.take<const float*>(entries), p.ka = a.take<const float*>(entries);
      p.v = a.take<const float*>(entries), p.o = a.take<float*>(entries), p.s1 = a.take<float*>(entries);
      p.s2 = a.take<float*>(entries), p.dout = a.take<const float*>(entries), p.dq = a.take<float*>(entries);
      p.dk = a.take<float*>(entries), p.dka = a.take<float*>(entries), p.dv = a.take<float*>(entries);
      if (pass == 0)
        s.arena = static_cast<uint8_t*>(cuda::device_alloc(
            a.used(), ("the training activations of " + std::to_string(batch) + " x " + std::to_string(seq) +
                       " tokens (lower --batch or --seq-len)").c_str()));
    }
    s.batch = batch, s.seq = seq;
    std::vector<float> cos_table, sin_table;
    rope_tables<float>(rope_inverse_frequencies(c), seq, cos_table, sin_table);
    upload(s.cos_table, cos_table, s.stream);
    upload(s.sin_table, sin_table, s.stream);
    s.anchors.clear();
  }
  // The anchors' tables follow the model's PoD config (set_pod may change it between calls).
  std::vector<int> anchors(static_cast<size_t>(L) * Hkv);
  for (int l = 0; l < L; ++l)
    for (int g = 0; g < Hkv; ++g) anchors[l * Hkv + g] = model_.anchor(l, g);
  if (anchors != s.anchors) {
    std::vector<float*> k(anchors.size()), dk(anchors.size());
    std::vector<const uint16_t*> k16(anchors.size());
    for (size_t i = 0; i < anchors.size(); ++i) {
      k[i] = s.k[anchors[i]], dk[i] = s.d_k[anchors[i]];
      k16[i] = s.flash ? s.k_bf16[anchors[i]] : nullptr;
    }
    PODKV_CUDA_CHECK(cudaMemcpyAsync(s.anchor_k, k.data(), k.size() * sizeof(float*), cudaMemcpyHostToDevice, s.stream));
    PODKV_CUDA_CHECK(cudaMemcpyAsync(s.anchor_dk, dk.data(), dk.size() * sizeof(float*), cudaMemcpyHostToDevice, s.stream));
    if (s.flash)
      PODKV_CUDA_CHECK(cudaMemcpyAsync(s.anchor_k_bf16, k16.data(), k16.size() * sizeof(uint16_t*),
                                       cudaMemcpyHostToDevice, s.stream));
    PODKV_CUDA_CHECK(cudaStreamSynchronize(s.stream));  // the host vectors die here
    s.anchors = anchors;
  }
  PODKV_CUDA_CHECK(cudaMemcpyAsync(s.tokens, tokens, n * sizeof(int32_t), cudaMemcpyHostToDevice, s.stream));

  auto w = [&](TensorKind kind, int layer = -1) -> const float* {
    const int i = model_.tensor_index(kind, layer);
    return i < 0 ? nullptr : s.params + model_.tensors()[i].offset;
  };
  const cudaStream_t st = s.stream;
  kern::embedding_forward(w(TensorKind::Embedding), s.tokens, n, hid, s.x_in[0], st);
  for (int l = 0; l < L; ++l) forward_layer(l, false);
  kern::rmsnorm_forward(s.x_final, w(TensorKind::FinalNorm), n, hid, c.rms_norm_eps, s.xn_final, s.r_final, st);
}

void CudaTrainer::forward_layer(int l, bool recomputing) {
  State& s = *s_;
  const ModelConfig& c = model_.config();
  const int64_t n = s.batch * s.seq, seq = s.seq, hid = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(),
                inter = c.intermediate_size;
  const int L = c.num_layers, H = c.num_heads, Hkv = c.num_kv_heads;
  auto w = [&](TensorKind kind, int layer = -1) -> const float* {
    const int i = model_.tensor_index(kind, layer);
    return i < 0 ? nullptr : s.params + model_.tensors()[i].offset;
  };
  auto W = [&](TensorKind kind, int layer) { return s.weight(model_, kind, layer); };
  const cudaStream_t st = s.stream;
  // With bf16 products xn1, xn2 and h exist only in bf16 (s.f32 / s.bf16 pick the buffer each kernel writes).
  kern::rmsnorm_forward(s.x_in[l], w(TensorKind::AttnNorm, l), n, hid, c.rms_norm_eps, s.f32(s.xn1[l]), s.r1[l], st,
                        s.bf16(s.xn1_16[l]));
  const State::Operand xn1 = s.operand(s.xn1[l], s.xn1_16[l]);
  s.linear(xn1, W(TensorKind::Wq, l), w(TensorKind::Bq, l), n, hid, qd, s.q[l]);
  s.linear(xn1, W(TensorKind::Wk, l), w(TensorKind::Bk, l), n, hid, kvd, s.k[l]);
  s.linear(xn1, W(TensorKind::Wv, l), w(TensorKind::Bv, l), n, hid, kvd, s.v_act[l]);
  kern::rope(s.q[l], n, seq, H, c.head_dim, s.cos_table, s.sin_table, c.rope_interleaved, 1.0f, st);
  kern::rope(s.k[l], n, seq, Hkv, c.head_dim, s.cos_table, s.sin_table, c.rope_interleaved, 1.0f, st);
  attention(l, false);
  s.convert(s.attn[l], n * qd, s.attn16[l]);
  s.linear(s.operand(s.attn[l], s.attn16[l]), W(TensorKind::Wo, l), nullptr, n, qd, hid, s.proj);
  kern::add(s.x_in[l], s.proj, n * hid, s.x_mid[l], st);
  kern::rmsnorm_forward(s.x_mid[l], w(TensorKind::MlpNorm, l), n, hid, c.rms_norm_eps, s.f32(s.xn2[l]), s.r2[l], st,
                        s.bf16(s.xn2_16[l]));
  const State::Operand xn2 = s.operand(s.xn2[l], s.xn2_16[l]);
  s.linear(xn2, W(TensorKind::Gate, l), nullptr, n, hid, inter, s.gate[l]);
  s.linear(xn2, W(TensorKind::Up, l), nullptr, n, hid, inter, s.up[l]);
  kern::swiglu_forward(s.gate[l], s.up[l], n * inter, s.f32(s.h[l]), st, s.bf16(s.h16[l]));
  s.linear(s.operand(s.h[l], s.h16[l]), W(TensorKind::Down, l), nullptr, n, inter, hid, s.proj);
  if (!recomputing) kern::add(s.x_mid[l], s.proj, n * hid, l + 1 < L ? s.x_in[l + 1] : s.x_final, st);
}

// Attention of `layer` over chunks of nb sequences. Forward: attn[layer] and
// the row log-sum-exps. Backward: d_attn (= dO) -> d_q (overwritten), d_v
// (overwritten), d_k[layer] and the anchors' d_k (accumulated).
void CudaTrainer::attention(int layer, bool backward) {
  if (s_->flash) {
    flash_attention(layer, backward);
    return;
  }
  State& s = *s_;
  const ModelConfig& c = model_.config();
  const int H = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim, group = H / Hkv;
  const int64_t qd = c.q_dim(), kvd = c.kv_dim(), seq = s.seq;
  const std::optional<PodConfig>& pod = model_.pod();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (int64_t b0 = 0; b0 < s.batch; b0 += s.nb) {
    kern::AttentionChunk ch;
    ch.seq = seq, ch.nb = std::min(s.nb, s.batch - b0), ch.b0 = b0;
    ch.heads = H, ch.kv_heads = Hkv, ch.dim = d;
    ch.pod = pod.has_value();
    if (pod) ch.sink = pod->sink_tokens, ch.recent = pod->recent_tokens;
    const int64_t E = ch.entries(), per_r = ch.nb * Hkv;
    float* const* anchors_k = s.anchor_k + static_cast<size_t>(layer) * Hkv;
    float* const* anchors_dk = s.anchor_dk + static_cast<size_t>(layer) * Hkv;
    kern::attention_pointers(ch, s.q[layer], s.k[layer], ch.pod ? anchors_k : nullptr, s.v_act[layer], s.attn[layer],
                             s.s1, s.s2, s.d_attn, s.d_q, s.d_k[layer], ch.pod ? anchors_dk : nullptr, s.d_v, s.ptrs,
                             s.stream);
    const kern::AttentionPointers& p = s.ptrs;
    s.gemm_batched(false, true, seq, seq, d, scale, p.q, qd, p.k, kvd, 0.0f, p.s1, seq, E);
    if (ch.pod) s.gemm_batched(false, true, seq, seq, d, scale, p.q, qd, p.ka, kvd, 0.0f, p.s2, seq, E);
    float* lse = s.lse[layer] + b0 * H * seq;
    kern::attention_softmax(ch, s.s1, s.s2, lse, backward, s.stream);
    if (!backward) {
      s.gemm_batched(false, false, seq, d, seq, 1.0f, p.s1, seq, p.v, kvd, 0.0f, p.o, qd, E);
      continue;
    }
    // dV = Pᵀ dO, one query head of each group at a time (no two entries of a call share a KV head).
    for (int r = 0; r < group; ++r)
      s.gemm_batched(true, false, seq, d, seq, 1.0f, p.s1 + r * per_r, seq, p.dout + r * per_r, qd,
                     r == 0 ? 0.0f : 1.0f, p.dv + r * per_r, kvd, per_r);
    s.gemm_batched(false, true, seq, seq, d, 1.0f, p.dout, qd, p.v, kvd, 0.0f, p.s2, seq, E);  // dP
    kern::attention_dscores(ch, s.s1, s.s2, s.d_attn, s.attn[layer], scale, s.stream);
    s.gemm_batched(false, false, seq, d, seq, 1.0f, p.s1, seq, p.k, kvd, 0.0f, p.dq, qd, E);
    if (ch.pod) s.gemm_batched(false, false, seq, d, seq, 1.0f, p.s2, seq, p.ka, kvd, 1.0f, p.dq, qd, E);
    for (int r = 0; r < group; ++r) {
      s.gemm_batched(true, false, seq, d, seq, 1.0f, p.s1 + r * per_r, seq, p.q + r * per_r, qd, 1.0f,
                     p.dk + r * per_r, kvd, per_r);
      if (ch.pod)
        s.gemm_batched(true, false, seq, d, seq, 1.0f, p.s2 + r * per_r, seq, p.q + r * per_r, qd, 1.0f,
                       p.dka + r * per_r, kvd, per_r);
    }
  }
}

// The same on the tensor cores (train_flash.cu): q, v (and dO) converted to
// bf16 head-major per call, the layer's keys once in the forward (kept for
// the backward and for the layers that use them as anchors).
void CudaTrainer::flash_attention(int layer, bool backward) {
  State& s = *s_;
  const ModelConfig& c = model_.config();
  const int H = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim;
  const std::optional<PodConfig>& pod = model_.pod();
  kern::FlashArgs f;
  f.batch = s.batch, f.seq = s.seq, f.heads = H, f.kv_heads = Hkv, f.dim = d;
  f.scale = 1.0f / std::sqrt(static_cast<float>(d));
  if (pod) {
    f.sink = pod->sink_tokens, f.recent = pod->recent_tokens;
    f.anchor_k = s.anchor_k_bf16 + static_cast<size_t>(layer) * Hkv;
    f.anchor_dk = s.anchor_dk + static_cast<size_t>(layer) * Hkv;
  }
  f.q = s.q_bf16, f.k = s.k_bf16[layer], f.v = s.v_bf16, f.lse = s.lse[layer];
  kern::to_head_major(s.q[layer], s.batch, s.seq, H, d, s.q_bf16, s.stream);
  kern::to_head_major(s.v_act[layer], s.batch, s.seq, Hkv, d, s.v_bf16, s.stream);
  if (!backward) {
    kern::to_head_major(s.k[layer], s.batch, s.seq, Hkv, d, s.k_bf16[layer], s.stream);
    f.out = s.attn[layer];
    kern::flash_attention(kern::FlashPass::Forward, f, s.stream);
    return;
  }
  kern::to_head_major(s.d_attn, s.batch, s.seq, H, d, s.dout_bf16, s.stream);
  kern::row_dot(s.d_attn, s.attn[layer], s.batch, s.seq, H, d, s.row_dot, s.stream);
  f.dout = s.dout_bf16, f.dot = s.row_dot, f.dq = s.d_q, f.dk = s.d_k[layer], f.dv = s.d_v;
  kern::flash_attention(kern::FlashPass::Dq, f, s.stream);
  kern::flash_attention(kern::FlashPass::Dkv, f, s.stream);
}

// Final norm output -> logits in chunks of rows -> loss statistics; with
// backward, dlogits -> d_xn (the final norm's input gradient) and the LM head's gradient.
LossStats CudaTrainer::head_and_loss(const int32_t* targets, double grad_scale, bool backward, float* logits_out) {
  State& s = *s_;
  const ModelConfig& c = model_.config();
  const int64_t n = s.batch * s.seq, hid = c.hidden_size, vocab = c.vocab_size;
  const int head = model_.tensor_index(TensorKind::LmHead);
  const float* w = s.params + model_.tensors()[head].offset;
  float* dw = model_.trainable()[head] ? s.grads + model_.tensors()[head].offset : nullptr;
  PODKV_CUDA_CHECK(cudaMemsetAsync(s.stats, 0, 3 * sizeof(double), s.stream));
  if (targets != nullptr)
    PODKV_CUDA_CHECK(cudaMemcpyAsync(s.targets, targets, n * sizeof(int32_t), cudaMemcpyHostToDevice, s.stream));
  for (int64_t r0 = 0; r0 < n; r0 += s.head_rows) {
    const int64_t rows = std::min(s.head_rows, n - r0);
    const float* x = s.xn_final + r0 * hid;
    s.gemm(false, true, rows, vocab, hid, 1.0f, x, hid, w, hid, 0.0f, s.logits, vocab);
    if (logits_out != nullptr)
      PODKV_CUDA_CHECK(cudaMemcpyAsync(logits_out + r0 * vocab, s.logits, rows * vocab * sizeof(float),
                                       cudaMemcpyDeviceToHost, s.stream));
    if (targets != nullptr)
      kern::cross_entropy(s.logits, s.targets + r0, rows, vocab, static_cast<float>(grad_scale), backward, s.stats,
                          s.stream);
    // The LM head keeps float32 operands (a vocabulary such as 1007 gives rows no bf16 kernel aligns).
    if (backward) {
      s.gemm(false, false, rows, hid, vocab, 1.0f, s.logits, vocab, w, hid, 0.0f, s.d_xn + r0 * hid, hid);
      if (dw != nullptr) s.gemm(true, false, vocab, hid, rows, 1.0f, s.logits, vocab, x, hid, 1.0f, dw, hid);
    }
  }
  double stats[3] = {0, 0, 0};
  PODKV_CUDA_CHECK(cudaMemcpyAsync(stats, s.stats, sizeof stats, cudaMemcpyDeviceToHost, s.stream));
  PODKV_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  LossStats r;
  r.loss_sum = stats[0], r.count = std::llround(stats[1]), r.correct = std::llround(stats[2]);
  return r;
}

LossStats CudaTrainer::forward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                               float* logits_out) {
  run_forward(tokens, batch, seq);
  return head_and_loss(targets, 0.0, false, logits_out);
}

LossStats CudaTrainer::forward_backward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                                        double grad_scale) {
  check(targets != nullptr, "forward_backward: no targets");
  run_forward(tokens, batch, seq);
  const LossStats stats = head_and_loss(targets, grad_scale, true, nullptr);
  backward_layers();
  return stats;
}

// From d_xn (the final norm's output gradient) down to the embedding, as
// Transformer::forward_backward.
void CudaTrainer::backward_layers() {
  State& s = *s_;
  const ModelConfig& c = model_.config();
  const int64_t n = s.batch * s.seq, hid = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  const int L = c.num_layers;
  const cudaStream_t st = s.stream;
  auto w = [&](TensorKind kind, int layer = -1) -> const float* {
    const int i = model_.tensor_index(kind, layer);
    return i < 0 ? nullptr : s.params + model_.tensors()[i].offset;
  };
  auto W = [&](TensorKind kind, int layer) { return s.weight(model_, kind, layer); };
  auto g = [&](TensorKind kind, int layer = -1) -> float* {
    const int i = model_.tensor_index(kind, layer);
    return i < 0 || !model_.trainable()[i] ? nullptr : s.grads + model_.tensors()[i].offset;
  };
  PODKV_CUDA_CHECK(cudaMemsetAsync(s.d_res, 0, n * hid * sizeof(float), st));
  for (int l = 0; l < L; ++l) PODKV_CUDA_CHECK(cudaMemsetAsync(s.d_k[l], 0, n * kvd * sizeof(float), st));
  kern::rmsnorm_backward(s.d_xn, s.x_final, w(TensorKind::FinalNorm), s.r_final, n, hid, s.d_res,
                         g(TensorKind::FinalNorm), s.columns, st);
  for (int l = L - 1; l >= 0; --l) {
    if (s.recompute) forward_layer(l, true);
    // MLP: d_res holds ∂/∂x_out.
    s.linear_backward(s.d_res, s.operand(s.h[l], s.h16[l]), W(TensorKind::Down, l), n, inter, hid, s.d_h, 0.0f,
                      g(TensorKind::Down, l), nullptr);
    kern::swiglu_backward(s.d_h, s.gate[l], s.up[l], n * inter, s.f32(s.d_gate), s.f32(s.d_up), st,
                          /*accumulate=*/false, s.bf16(s.d_gate16), s.bf16(s.d_up16));
    const State::Operand xn2 = s.operand(s.xn2[l], s.xn2_16[l]);
    s.linear_backward(s.d_gate, xn2, W(TensorKind::Gate, l), n, hid, inter, s.d_xn, 0.0f, g(TensorKind::Gate, l),
                      nullptr, s.bf16(s.d_gate16));
    s.linear_backward(s.d_up, xn2, W(TensorKind::Up, l), n, hid, inter, s.d_xn, 1.0f, g(TensorKind::Up, l), nullptr,
                      s.bf16(s.d_up16));
    kern::rmsnorm_backward(s.d_xn, s.x_mid[l], w(TensorKind::MlpNorm, l), s.r2[l], n, hid, s.d_res,
                           g(TensorKind::MlpNorm, l), s.columns, st);
    // Attention: d_k[l] already holds what the higher layers of l's blocks sent to its keys.
    s.linear_backward(s.d_res, s.operand(s.attn[l], s.attn16[l]), W(TensorKind::Wo, l), n, qd, hid, s.d_attn, 0.0f,
                      g(TensorKind::Wo, l), nullptr);
    attention(l, true);
    kern::rope(s.d_q, n, s.seq, c.num_heads, c.head_dim, s.cos_table, s.sin_table, c.rope_interleaved, -1.0f, st);
    kern::rope(s.d_k[l], n, s.seq, c.num_kv_heads, c.head_dim, s.cos_table, s.sin_table, c.rope_interleaved, -1.0f, st);
    const State::Operand xn1 = s.operand(s.xn1[l], s.xn1_16[l]);
    s.linear_backward(s.d_q, xn1, W(TensorKind::Wq, l), n, hid, qd, s.d_xn, 0.0f, g(TensorKind::Wq, l),
                      g(TensorKind::Bq, l));
    s.linear_backward(s.d_k[l], xn1, W(TensorKind::Wk, l), n, hid, kvd, s.d_xn, 1.0f, g(TensorKind::Wk, l),
                      g(TensorKind::Bk, l));
    s.linear_backward(s.d_v, xn1, W(TensorKind::Wv, l), n, hid, kvd, s.d_xn, 1.0f, g(TensorKind::Wv, l),
                      g(TensorKind::Bv, l));
    kern::rmsnorm_backward(s.d_xn, s.x_in[l], w(TensorKind::AttnNorm, l), s.r1[l], n, hid, s.d_res,
                           g(TensorKind::AttnNorm, l), s.columns, st);
  }
  if (float* d_embedding = g(TensorKind::Embedding)) kern::embedding_backward(s.d_res, s.tokens, n, hid, d_embedding, st);
}

double CudaTrainer::clip_grads(const std::vector<ParamRange>& ranges, double max_norm) {
  State& s = *s_;
  double* sum = s.stats + 3;
  PODKV_CUDA_CHECK(cudaMemsetAsync(sum, 0, sizeof(double), s.stream));
  for (const ParamRange& r : ranges) kern::sum_squares(s.grads + r.offset, static_cast<int64_t>(r.size), sum, s.stream);
  double squares = 0;
  PODKV_CUDA_CHECK(cudaMemcpyAsync(&squares, sum, sizeof squares, cudaMemcpyDeviceToHost, s.stream));
  PODKV_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  const double norm = std::sqrt(squares);
  if (max_norm > 0 && norm > max_norm)
    for (const ParamRange& r : ranges)
      kern::scale(s.grads + r.offset, static_cast<int64_t>(r.size), static_cast<float>(max_norm / norm), s.stream);
  return norm;
}

void CudaTrainer::adamw_step(const std::vector<ParamRange>& ranges, double lr) {
  check(optimizer_ != nullptr, "cuda trainer: no optimiser");
  State& s = *s_;
  AdamW& opt = *optimizer_;
  opt.set_steps(opt.steps() + 1);
  const AdamWOptions& o = opt.options();
  const double steps = static_cast<double>(opt.steps());
  kern::AdamWStep step;
  step.beta1 = static_cast<float>(o.beta1), step.beta2 = static_cast<float>(o.beta2), step.eps = static_cast<float>(o.eps);
  step.step_size = static_cast<float>(lr) / static_cast<float>(1.0 - std::pow(o.beta1, steps));
  step.correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(o.beta2, steps)));
  for (const ParamRange& r : ranges) {
    step.decay = r.decay ? static_cast<float>(1.0 - lr * o.weight_decay) : 1.0f;
    kern::adamw(s.params + r.offset, s.grads + r.offset, s.m + r.offset, s.v + r.offset, static_cast<int64_t>(r.size),
                step, s.stream);
  }
  s.refresh_weights16(model_.params().size());
}

}  // namespace podkv::train

#endif  // PODKV_HAVE_CUDA
