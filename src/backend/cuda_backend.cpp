#include "backend/cuda_backend.h"

#if defined(PODKV_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "util/error.h"

namespace podkv {

CudaBackend::CudaBackend(const Model& model, CudaBackendOptions options) : model_(model), options_(options) {
  check(options_.weights == DType::BF16 || options_.weights == DType::F32,
        std::string("cuda backend: weights can be uploaded as bf16 or f32, not ") + dtype_name(options_.weights));
  if (const char* sampling = std::getenv("PODKV_CUDA_SAMPLING"); sampling != nullptr && std::string(sampling) == "0")
    options_.sampling = false;
  const ModelConfig& c = model.config();
  check(c.head_dim <= 128, "cuda backend: head_dim " + std::to_string(c.head_dim) + " is above 128");
  // A model that does not fit fails at the first allocation that does not (the error says what is free).
  for (const LayerWeights& w : model.layers()) {
    Layer l;
    // q, k and v stacked into one matrix, gate and up into another: one matmul each.
    l.wqkv = upload_stacked({&w.wq, &w.wk, &w.wv});
    l.wo = upload_matrix(w.wo);
    l.w_gate_up = upload_stacked({&w.w_gate, &w.w_up});
    l.w_down = upload_matrix(w.w_down);
    l.attn_norm = upload_floats(w.attn_norm);
    l.mlp_norm = upload_floats(w.mlp_norm);
    if (!w.bq.empty()) {
      std::vector<float> bqkv(w.bq);
      bqkv.insert(bqkv.end(), w.bk.begin(), w.bk.end());
      bqkv.insert(bqkv.end(), w.bv.begin(), w.bv.end());
      l.bqkv = upload_floats(bqkv);
    }
    if (!w.q_norm.empty()) {
      l.q_norm = upload_floats(w.q_norm);
      l.k_norm = upload_floats(w.k_norm);
    }
    layers_.push_back(l);
  }
  all_bf16_ = std::all_of(layers_.begin(), layers_.end(), [](const Layer& l) {
    return l.wqkv.dtype == DType::BF16 && l.wo.dtype == DType::BF16 && l.w_gate_up.dtype == DType::BF16 &&
           l.w_down.dtype == DType::BF16;
  });
  embedding_ = upload_matrix(model.embedding());
  // A tied LM head is the embedding: one copy on the device.
  const bool tied = model.has_weights() ? model.lm_head().data == model.embedding().data : c.tie_word_embeddings;
  lm_head_ = tied ? embedding_ : upload_matrix(model.lm_head());
  final_norm_ = upload_floats(model.final_norm());
  inv_freq_ = upload_floats(model.rope_inv_freq());
  ops_.synchronize();
}

CudaBackend::~CudaBackend() = default;

WeightMatrix CudaBackend::upload_matrix(const WeightMatrix& host) { return upload_stacked({&host}); }

WeightMatrix CudaBackend::upload_stacked(std::initializer_list<const WeightMatrix*> parts) {
  const int64_t cols = (*parts.begin())->cols;
  int64_t rows = 0;
  for (const WeightMatrix* m : parts) {
    check(m->cols == cols, "cuda backend: stacked matrices differ in width");
    rows += m->rows;
  }
  // A shapes-only model gets random bf16 weights made on the device.
  const DType to = (*parts.begin())->data == nullptr ? DType::BF16 : options_.weights;
  const size_t out_row = dtype_bytes(to, static_cast<size_t>(cols));
  DeviceBuffer buf(ops_, out_row * static_cast<size_t>(rows));
  int64_t at = 0;  // first row of the part
  for (const WeightMatrix* part : parts) {
    const WeightMatrix& host = *part;
    uint8_t* dst_base = static_cast<uint8_t*>(buf.data()) + at * out_row;
    at += host.rows;
    if (host.data == nullptr) {
      ops_.fill_random_bf16(dst_base, host.rows * host.cols, options_.random_seed * 1000003 + owned_.size() * 7 + at,
                            static_cast<float>(std::sqrt(3.0 / static_cast<double>(host.cols))));
      continue;
    }
    // Converted on the host in panels of rows (to_f32 reads every type podkv loads), then uploaded.
    const int64_t panel = std::max<int64_t>(1, (int64_t{32} << 20) / static_cast<int64_t>(out_row));
    std::vector<uint8_t> staged(static_cast<size_t>(std::min(panel, host.rows)) * out_row);
    const auto* src = static_cast<const uint8_t*>(host.data);
    for (int64_t r0 = 0; r0 < host.rows; r0 += panel) {
      const int64_t n = std::min(panel, host.rows - r0);
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < n; ++r) {
        std::vector<float> row(static_cast<size_t>(host.cols));
        to_f32(host.dtype, src + (r0 + r) * host.row_bytes(), row.data(), row.size());
        uint8_t* dst = staged.data() + r * out_row;
        if (to == DType::F32) {
          std::memcpy(dst, row.data(), out_row);
        } else {
          auto* h = reinterpret_cast<uint16_t*>(dst);
          for (int64_t i = 0; i < host.cols; ++i) h[i] = f32_to_bf16(row[i]);
        }
      }
      ops_.upload(dst_base + r0 * out_row, staged.data(), static_cast<size_t>(n) * out_row);
      ops_.synchronize();  // the staging buffer is reused
    }
  }
  weight_bytes_ += buf.bytes();
  WeightMatrix w{to, rows, cols, buf.data()};
  owned_.push_back(std::move(buf));
  return w;
}

const float* CudaBackend::upload_floats(const std::vector<float>& host) {
  DeviceBuffer buf(ops_, host.size() * sizeof(float));
  buf.upload(host.data(), host.size() * sizeof(float));
  weight_bytes_ += buf.bytes();
  const float* p = buf.as<float>();
  owned_.push_back(std::move(buf));
  return p;
}

std::unique_ptr<KvPool> CudaBackend::create_pool(KvCache& cache) { return ops_.create_kv_pool(cache); }

size_t CudaBackend::activation_bytes() const {
  size_t bytes = 0;
  for (const DeviceBuffer* b : {&x_, &xn_, &q_, &k_, &v_, &attn_, &proj_, &gate_, &up_, &gates_, &tokens_, &positions_})
    bytes += b->bytes();
  return bytes;
}

bool CudaBackend::bf16_q_step(int64_t n) const {
  return all_bf16_ && ops_.prompt_bf16_path(n) && !observer_ && ops_.prompt_q_bf16(model_.config().num_heads);
}

bool CudaBackend::lean_step(int64_t n) const { return bf16_q_step(n) && ops_.attention_staging(); }

void CudaBackend::reserve(int64_t rows, bool lean, int64_t logit_rows, size_t score_count) {
  const ModelConfig& c = model_.config();
  const bool grow_full = !lean && rows > full_rows_, grow_lean = rows > lean_rows_;
  const int64_t norm_rows = std::max(lean ? 0 : rows, logit_rows);
  if (grow_full || grow_lean || norm_rows > norm_rows_) {
    const int64_t F = grow_full ? std::max(rows, 2 * full_rows_) : full_rows_;
    const int64_t R = std::max(F, grow_lean ? std::max(rows, 2 * lean_rows_) : lean_rows_);
    const int64_t N = std::max({F, norm_rows, norm_rows_});
    ops_.synchronize();
    auto floats = [&](int64_t n) { return DeviceBuffer(ops_, static_cast<size_t>(n) * sizeof(float)); };
    const int64_t qkv = c.q_dim() + 2 * c.kv_dim(), inter = c.intermediate_size;
    x_ = floats(R * c.hidden_size);
    xn_ = floats(N * c.hidden_size);
    q_ = floats(std::max(F * c.q_dim(), (R * c.q_dim() + 1) / 2));  // lean: bf16
    k_ = floats(F * c.kv_dim());
    v_ = floats(F * c.kv_dim());
    attn_ = floats(F * c.q_dim());
    proj_ = floats(N * c.hidden_size);
    gate_ = floats(std::max(F * std::max<int64_t>(2 * inter, qkv), R * std::max<int64_t>(inter, qkv)));
    up_ = floats(F * inter);
    gates_ = floats(static_cast<int64_t>(c.num_layers) * R * c.num_heads);
    tokens_ = DeviceBuffer(ops_, static_cast<size_t>(R) * sizeof(int32_t));
    positions_ = DeviceBuffer(ops_, static_cast<size_t>(R) * sizeof(int64_t));
    full_rows_ = F, lean_rows_ = R, norm_rows_ = N;
    ++scratch_generation_;
  }
  if (logit_rows > logit_capacity_) {
    const int64_t n = std::max(logit_rows, 2 * logit_capacity_);
    ops_.synchronize();
    logit_rows_ = DeviceBuffer(ops_, static_cast<size_t>(n) * sizeof(int64_t));
    logits_ = DeviceBuffer(ops_, static_cast<size_t>(n) * c.vocab_size * sizeof(float));
    logit_capacity_ = n;
  }
  if (score_count > score_capacity_) {
    ops_.synchronize();
    score_capacity_ = std::max(score_count, 2 * score_capacity_);
    scores_ = DeviceBuffer(ops_, score_capacity_ * sizeof(float));
  }
}

void CudaBackend::forward(const ForwardStep& step, const KvView& view, ForwardOutput& out) {
  const ModelConfig& c = model_.config();
  const int64_t n = step.rows;
  const size_t score_count = view.num_groups > 0 ? view.score_indptr[view.num_seqs * view.num_groups] : 0;
  out.scores.assign(score_count, 0.0f);
  const int64_t rows = step.num_logit_rows;
  {
    ProfileScope p(ops_, "step setup (uploads, embedding)");
    ops_.set_step(view, step.attention);
    reserve(n, lean_step(n), rows, score_count);  // after set_step: whether the step is lean depends on it
    ops_.fill_zero(scores_.data(), score_count * sizeof(float));
    tokens_.upload(step.tokens, n * sizeof(int32_t));
    positions_.upload(step.positions, n * sizeof(int64_t));
    if (rows > 0) logit_rows_.upload(step.logit_rows, rows * sizeof(int64_t));
  }
  // Graphs need steps without host reads in between (tau's skip counts, selection scores, a layer
  // observer's downloads).
  if (graphs_ && options_.graphs && !ops_.profiling() && step.tau >= 1.0f && score_count == 0 && !observer_) {
    std::string key = ops_.step_key(c.num_heads);
    const int64_t shape[] = {n, rows, scratch_generation_, logit_capacity_, reinterpret_cast<int64_t>(x_.data()),
                             reinterpret_cast<int64_t>(logits_.data())};
    key.append(reinterpret_cast<const char*>(shape), sizeof(shape));
    if (ops_.has_graph(key)) {
      ops_.run_graph(key);
      AttentionParams params;
      params.num_heads = c.num_heads;
      for (int layer = 0; layer < c.num_layers; ++layer) {
        params.layer = layer;
        ops_.count_attention_stats(params, out.stats);
      }
    } else if (key == last_key_) {
      const AttentionStats before = out.stats;
      ops_.begin_capture();
      try {
        run_layers(step, view, out);
        ops_.end_capture(key);
        ops_.run_graph(key);
      } catch (const Error&) {
        // Something in the step cannot be captured: this backend runs launch by launch from now on.
        ops_.abort_capture();
        graphs_ = false;
        out.stats = before;
        run_layers(step, view, out);
      }
    } else {
      run_layers(step, view, out);
      last_key_ = key;
    }
  } else {
    run_layers(step, view, out);
  }
  // Drawn on the device: the token ids come back, and the logits only when a row needs the host.
  bool want_logits = true;
  if (step.samples != nullptr && rows > 0) {
    out.tokens.resize(static_cast<size_t>(rows));
    sampler_.sample(logits_.as<float>(), rows, c.vocab_size, step.samples, out.tokens.data());
    want_logits = std::find_if(out.tokens.begin(), out.tokens.end(), [](int32_t t) { return t < 0; }) != out.tokens.end();
  }
  out.logits.resize(want_logits ? static_cast<size_t>(rows) * c.vocab_size : 0);
  if (!out.logits.empty()) logits_.download(out.logits.data(), out.logits.size() * sizeof(float));
  if (score_count > 0) scores_.download(out.scores.data(), score_count * sizeof(float));
  ops_.synchronize();
}

void CudaBackend::run_layers(const ForwardStep& step, const KvView& view, ForwardOutput& out) {
  const ModelConfig& c = model_.config();
  const int64_t n = step.rows, hidden = c.hidden_size;
  const size_t score_count = out.scores.size();  // forward() sized it: the view's score output
  {
    ProfileScope p(ops_, "step setup (uploads, embedding)");
    ops_.embedding(embedding_, tokens_.as<int32_t>(), n, x_.as<float>());
  }
  AttentionParams params;
  params.num_heads = c.num_heads;
  params.scale = static_cast<float>(attention_score_scale(c));
  params.tau = step.tau;
  AttentionOutputs outputs;
  outputs.out = attn_.as<float>();
  outputs.gates = step.tau < 1.0f ? gates_.as<float>() : nullptr;  // gates are read only for tau
  outputs.scores = score_count > 0 ? scores_.as<float>() : nullptr;
  outputs.stats = &out.stats;
  float *x = x_.as<float>(), *xn = xn_.as<float>(), *q = q_.as<float>(), *k = k_.as<float>(), *v = v_.as<float>();
  float *proj = proj_.as<float>(), *gate = gate_.as<float>(), *up = up_.as<float>();
  const int64_t* positions = positions_.as<int64_t>();

  // Prompt rows of BF16 weights take the bf16 prompt path (cuda_backend_ops.h): the GEMM inputs
  // staged in bf16 by the op before, gate | up in bf16, o and down added to x inside their GEMMs.
  const bool staged = all_bf16_ && ops_.prompt_bf16_path(n);
  // And where only the prefill kernels read Q (bf16_q_step), the RoPE kernel writes it for them in
  // bf16, scaled as they scale it, in q's buffer (half its bytes), and no float32 k, v.
  uint16_t* q_bf16 = bf16_q_step(n) ? reinterpret_cast<uint16_t*>(q) : nullptr;
  // A lean step (lean_step: that, and the attention output staged, which attention_staged then
  // confirms) has room for no float32 q, k, v, attention output or MLP scratch.
  const bool lean = lean_step(n);
  const float q_scale = params.scale * 1.4426950408889634f;  // PrefillWarp's: scale * log2(e)
  bool have_qkv = false;   // the previous layer's decode chain left this layer's q | k | v in `gate`
  bool have_rope = false;  // ... or did its RoPE and KV write too: q, k, v and the entries are written
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const Layer& w = layers_[layer];
    if (layer == 0) {
      // Later layers' attention norm comes with the previous layer's down projection.
      ProfileScope p(ops_, "norms, residual adds");
      if (staged) ops_.stage_rms_norm(x, w.attn_norm, n, hidden, c.rms_norm_eps);
      else ops_.rms_norm(x, w.attn_norm, n, hidden, c.rms_norm_eps, xn);
    }
    // q | k | v in bf16 for the RoPE kernel's prompt form (an experiment, off by default).
    const bool qkv_bf16 = q_bf16 != nullptr && w.bqkv == nullptr && w.q_norm == nullptr && ops_.prompt_qkv_bf16();
    if (!have_qkv) {
      ProfileScope p(ops_, "matmul q, k, v");
      // [n, q + 2 kv] in the MLP's scratch
      if (qkv_bf16) ops_.matmul_staged_bf16(w.wqkv, n, reinterpret_cast<uint16_t*>(gate));
      else if (staged) ops_.matmul_staged(w.wqkv, n, gate, w.bqkv);
      else ops_.matmul(w.wqkv, xn, n, gate, w.bqkv);
    }
    if (!have_rope) {
      // The split, RoPE of q and k, and the KV write: one launch, with Qwen3's q and k norms (the prompt
      // form, Q in bf16, takes them from a launch of their own before it).
      ProfileScope p(ops_, "rope, kv write");
      const bool norms_apart = w.q_norm != nullptr && (q_bf16 != nullptr || !ops_.qk_norm_fusion());
      if (norms_apart)
        ops_.head_rms_norm(gate, n, c.num_heads, c.num_kv_heads, c.head_dim, w.q_norm, w.k_norm, c.rms_norm_eps);
      const float* q_norm = norms_apart ? nullptr : w.q_norm;
      const float* k_norm = norms_apart ? nullptr : w.k_norm;
      ops_.split_qkv_rope_kv_write(layer, gate, n, c.num_heads, c.num_kv_heads, c.head_dim, positions, inv_freq_,
                                   c.rope_interleaved, q, k, v, q_bf16, q_scale, qkv_bf16, q_norm, k_norm,
                                   c.rms_norm_eps);
    }
    bool attention_staged = false;  // its output already staged in bf16 for the o projection
    {
      ProfileScope p(ops_, "attention");
      params.layer = layer;
      if (staged) attention_staged = ops_.attention_staged(params, q, outputs, q_bf16);
      else ops_.attention(params, q, outputs);
      check(!lean || attention_staged, "cuda forward: a lean step's attention output was not staged");
    }
    if (observer_) observer_copies_.observe(ops_, observer_, step, view, layer, q, c.q_dim());
    if (!staged) {
      // A decode row: o, gate | up, down and the next layer's q, k, v in one launch, where it applies.
      CudaBackendOps::NextProjection next;
      CudaBackendOps::NextRope rope{layer + 1, c.num_heads, positions, inv_freq_, c.rope_interleaved, q, k, v};
      if (layer + 1 < c.num_layers) {
        const Layer& after = layers_[layer + 1];
        // The chain's own RoPE has no place for Qwen3's q and k norms: it leaves q | k | v in `gate`.
        next = {&after.wqkv, after.bqkv, after.attn_norm, after.q_norm == nullptr ? &rope : nullptr};
      }
      have_qkv = ops_.decode_chain(w.wo, w.w_gate_up, w.w_down, w.mlp_norm, next, c.rms_norm_eps, n,
                                   attn_.as<float>(), x, up, gate);
      have_rope = have_qkv && rope.done;
      if (have_qkv) continue;
    }
    {
      // x += o(attention), xn = the MLP's norm of x (one launch for a decode row).
      ProfileScope p(ops_, "matmul o (+ residual, norm)");
      if (staged) {
        if (!attention_staged) ops_.stage_rows(attn_.as<float>(), n, c.q_dim());
        ops_.matmul_staged_add(w.wo, n, x);
        ops_.stage_rms_norm(x, w.mlp_norm, n, hidden, c.rms_norm_eps);
      } else {
        ops_.matmul_add_rms_norm(w.wo, attn_.as<float>(), n, proj, x, w.mlp_norm, c.rms_norm_eps, xn);
      }
    }
    {
      // gate | up [n, 2 inter] in `gate` (bf16 when staged), and unless staged silu(gate) * up
      // [n, inter] in `up` (one launch for a decode row).
      ProfileScope p(ops_, "matmul gate, up (+ silu_mul)");
      if (staged) ops_.matmul_staged_bf16(w.w_gate_up, n, reinterpret_cast<uint16_t*>(gate));
      else ops_.matmul_swiglu(w.w_gate_up, xn, n, gate, up);
    }
    {
      // x += down(MLP), xn = the next layer's attention norm of x (after the last layer: the add only).
      ProfileScope p(ops_, staged ? "silu_mul, matmul down (+ residual, norm)" : "matmul down (+ residual, norm)");
      const float* next_norm = layer + 1 < c.num_layers ? layers_[layer + 1].attn_norm : nullptr;
      if (staged) {
        ops_.stage_swiglu(reinterpret_cast<const uint16_t*>(gate), n, c.intermediate_size);
        ops_.matmul_staged_add(w.w_down, n, x);
        if (next_norm != nullptr) ops_.stage_rms_norm(x, next_norm, n, hidden, c.rms_norm_eps);
      } else {
        ops_.matmul_add_rms_norm(w.w_down, up, n, proj, x, next_norm, c.rms_norm_eps, xn);
      }
    }
  }
  const int64_t rows = step.num_logit_rows;
  if (rows > 0) {
    ProfileScope p(ops_, "final norm, LM head, logits download");
    // Where the logit rows are the step's rows in order (every decode step), the norm reads x itself:
    // the gather would be a copy (a launch of about 5 us at batch 1).
    bool every_row = rows == n;
    for (int64_t r = 0; r < rows && every_row; ++r) every_row = step.logit_rows[r] == r;
    if (!every_row) ops_.gather_rows(x, hidden, logit_rows_.as<int64_t>(), rows, proj);
    ops_.rms_norm(every_row ? x : proj, final_norm_, rows, hidden, c.rms_norm_eps, xn);
    ops_.matmul(lm_head_, xn, rows, logits_.as<float>(), nullptr);
  }
}

}  // namespace podkv

#endif
