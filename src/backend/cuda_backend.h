// The CUDA backend: the forward pass of cpu_backend.h with CudaBackendOps,
// weights uploaded once (matrices converted on the host, in row panels, to
// bf16 by default, or kept float32), norms, biases and RoPE frequencies as
// float32, the KV pool in device memory (entry copies run on the device),
// float32 activations. Per step it uploads the tokens, positions and page
// tables, and downloads the requested logits and selection scores.
#pragma once

#include <initializer_list>

#include "backend/backend.h"
#include "backend/cuda_backend_ops.h"
#include "backend/cuda_sampler.h"
#include "backend/observer_copies.h"

namespace podkv {

#if defined(PODKV_HAVE_CUDA)

struct CudaBackendOptions {
  // Device type of the weight matrices (embedding and LM head included): BF16
  // (any stored type converted, round to nearest even) or F32 (widened exactly).
  DType weights = DType::BF16;
  // Seed of the random bf16 weights a model without weight data (Model::shapes_only) gets:
  // uniform in ±sqrt(3 / fan_in), so activations keep their scale through the layers.
  uint64_t random_seed = 1;
  // Steps of one shape (decode) replay a CUDA graph of the layers: hundreds of kernel launches
  // become one. A step whose shape differs from the last one's runs launch by launch.
  bool graphs = true;
  // Next tokens drawn on the device (only their ids come back) when the runner asks for draws;
  // off: the logits come back and the host samples. PODKV_CUDA_SAMPLING=0 turns it off.
  bool sampling = true;
};

class CudaBackend : public Backend {
 public:
  // Uploads the weights (or fills random ones for a shapes-only model); throws Error when there is no
  // device or they do not fit.
  explicit CudaBackend(const Model& model, CudaBackendOptions options = {});
  ~CudaBackend() override;
  std::string name() const override { return "cuda"; }
  const Model& model() const override { return model_; }
  std::unique_ptr<KvPool> create_pool(KvCache& cache) override;
  void forward(const ForwardStep& step, const KvView& view, ForwardOutput& out) override;
  // Layer observers read host memory: while one is set, steps run launch by launch (no graph) and
  // after each layer's attention its q rows and KV pages are downloaded for it (observer_copies.h).
  void set_layer_observer(LayerObserver observer) override { observer_ = std::move(observer); }
  bool samples_on_device() const override { return options_.sampling; }

  size_t weight_bytes() const { return weight_bytes_; }
  // Device memory of the activation buffers the steps so far needed (reserve).
  size_t activation_bytes() const;
  CudaBackendOps& ops() { return ops_; }

 private:
  struct Layer {
    WeightMatrix wqkv;       // [q + 2 kv, hidden]: wq, wk, wv stacked (device memory)
    WeightMatrix wo;
    WeightMatrix w_gate_up;  // [2 inter, hidden]: w_gate, w_up stacked
    WeightMatrix w_down;
    const float *attn_norm, *mlp_norm, *bqkv = nullptr;
    const float *q_norm = nullptr, *k_norm = nullptr;  // Qwen3's [head_dim] each
  };
  WeightMatrix upload_matrix(const WeightMatrix& host);
  // Matrices of one width stacked by rows into one device matrix.
  WeightMatrix upload_stacked(std::initializer_list<const WeightMatrix*> parts);
  const float* upload_floats(const std::vector<float>& host);
  // Room for a step of `rows` rows (lean: a lean_step's buffers only), logit_rows and score_count.
  void reserve(int64_t rows, bool lean, int64_t logit_rows, size_t score_count);
  // Whether a step of n rows gives its prefill kernels Q in bf16 from the RoPE kernel: prompt rows of
  // the bf16 path whose attention is the prefill kernels' alone, and no observer (which reads q).
  bool bf16_q_step(int64_t n) const;
  // Whether it is also a lean one: that, and the attention output staged. Such a step writes only x,
  // Q (bf16), the stacked products (q | k | v in float32, gate | up in bf16) and the gates of its rows;
  // the other activations (xn, k, v, attn, proj, up) are untouched but for the final norm's logit rows.
  bool lean_step(int64_t n) const;
  // Everything after the uploads: the layers, the final norm and the LM head into logits_. `view` is
  // the step's (host page tables) for the observer.
  void run_layers(const ForwardStep& step, const KvView& view, ForwardOutput& out);

  const Model& model_;
  CudaBackendOptions options_;
  CudaBackendOps ops_;
  CudaSampler sampler_{ops_};
  LayerObserver observer_;
  ObserverCopies observer_copies_;  // the host q rows and KV pages observer_ reads
  std::vector<DeviceBuffer> owned_;  // every weight's device memory
  size_t weight_bytes_ = 0;
  std::vector<Layer> layers_;
  bool all_bf16_ = false;  // every layer matrix BF16: prompt steps may take the bf16 path
  WeightMatrix embedding_, lm_head_;
  const float* final_norm_ = nullptr;
  const float* inv_freq_ = nullptr;
  // Activations for up to full_rows_ rows of any step: [R, hidden], [R, H·d], [R, H_kv·d], gate_
  // [R, max(2 inter, H·d + 2 H_kv·d)] (the stacked matmuls' outputs), up_ [R, inter], [L, R·H]; and for
  // up to lean_rows_ (>= full_rows_) rows of lean steps: x_, tokens_, positions_ and gates_ [.., R·H]
  // of R rows, q_ of R·H·d bf16 values, gate_ of R·max(2 inter bf16 values, H·d + 2 H_kv·d floats);
  // xn_ and proj_ for max(full_rows_, logit rows). A prompt chunk of 4,096 rows of the Llama-3-8B
  // shape: about 1.09 GB in all, 0.35 GB lean (the ops' bf16 staging buffer, 0.12 GB, either way).
  // scratch_generation_ counts the reallocations (step graphs hold the buffers' addresses).
  int64_t full_rows_ = 0, lean_rows_ = 0, norm_rows_ = 0, logit_capacity_ = 0, scratch_generation_ = 0;
  size_t score_capacity_ = 0;
  DeviceBuffer x_, xn_, q_, k_, v_, attn_, proj_, gate_, up_, gates_, tokens_, positions_, logit_rows_, logits_,
      scores_;
  // The key of the last step run launch by launch: a shape seen twice in a row is captured (its
  // buffers have their size by then), and the ops keep the graph under its key.
  std::string last_key_;
  bool graphs_ = true;
};

#endif

}  // namespace podkv
