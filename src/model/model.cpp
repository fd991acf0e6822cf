#include "model/model.h"

#include <filesystem>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "util/error.h"

namespace podkv {

namespace fs = std::filesystem;

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

bool is_weight_dtype(DType t) { return t != DType::I32 && t != DType::I64; }

// A tensor found in a file, before shape checks: shape in PyTorch order (rows first).
struct FoundTensor {
  std::string file;
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
};

FoundTensor expect_shape(const FoundTensor& t, std::vector<int64_t> expected) {
  if (t.shape != expected)
    throw Error(t.file + ": tensor '" + t.name + "' has shape " + shape_string(t.shape) + ", expected " +
                shape_string(expected) + " from the config");
  if (!is_weight_dtype(t.dtype))
    throw Error(t.file + ": tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) +
                ", expected a float or quantized weight type");
  if (const int block = dtype_block_size(t.dtype); block > 1 && expected.back() % block != 0)
    throw Error(t.file + ": tensor '" + t.name + "' is " + dtype_name(t.dtype) + " but its rows are not a multiple of " +
                std::to_string(block));
  return t;
}

WeightMatrix as_matrix(const FoundTensor& t) {
  return WeightMatrix{t.dtype, t.shape[0], t.shape[1], t.data};
}

std::vector<float> as_vector(const FoundTensor& t) {
  std::vector<float> v(static_cast<size_t>(t.shape[0]));
  to_f32(t.dtype, t.data, v.data(), v.size());
  return v;
}

}  // namespace

std::string hf_layer_tensor(int layer, const std::string& suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

Model::~Model() = default;

ModelConfig Model::load_config(const std::string& path) {
  if (fs::is_directory(path)) {
    const std::string config = (fs::path(path) / "config.json").string();
    if (!fs::exists(config)) throw Error(path + ": no config.json in this directory");
    return load_hf_config(config);
  }
  return load(path)->config();
}

std::unique_ptr<Model> Model::shapes_only(const std::string& path) {
  std::unique_ptr<Model> model(new Model());
  model->path_ = path;
  model->config_ = load_config(path);
  const ModelConfig& c = model->config_;
  const int64_t h = c.hidden_size;
  auto shape = [](int64_t rows, int64_t cols) { return WeightMatrix{DType::BF16, rows, cols, nullptr}; };
  model->embedding_ = shape(c.vocab_size, h);
  model->lm_head_ = shape(c.vocab_size, h);
  model->final_norm_.assign(static_cast<size_t>(h), 1.0f);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& w = model->layers_.emplace_back();
    w.attn_norm.assign(static_cast<size_t>(h), 1.0f);
    w.mlp_norm.assign(static_cast<size_t>(h), 1.0f);
    w.wq = shape(c.q_dim(), h);
    w.wk = shape(c.kv_dim(), h);
    w.wv = shape(c.kv_dim(), h);
    if (c.attention_bias) {
      w.bq.assign(static_cast<size_t>(c.q_dim()), 0.0f);
      w.bk.assign(static_cast<size_t>(c.kv_dim()), 0.0f);
      w.bv.assign(static_cast<size_t>(c.kv_dim()), 0.0f);
    }
    if (c.qk_norm) {
      w.q_norm.assign(static_cast<size_t>(c.head_dim), 1.0f);
      w.k_norm.assign(static_cast<size_t>(c.head_dim), 1.0f);
    }
    w.wo = shape(h, c.q_dim());
    w.w_gate = shape(c.intermediate_size, h);
    w.w_up = shape(c.intermediate_size, h);
    w.w_down = shape(h, c.intermediate_size);
  }
  model->rope_inv_freq_ = rope_inverse_frequencies(c);
  return model;
}

std::unique_ptr<Model> Model::load(const std::string& path) {
  std::unique_ptr<Model> model(new Model());
  model->path_ = path;
  if (fs::is_directory(path)) {
    model->load_hf_directory(path);
  } else if (fs::exists(path)) {
    model->load_gguf(path);
  } else {
    throw Error(path + ": no such file or directory");
  }
  const ModelConfig& c = model->config_;
  if (c.num_heads / c.num_kv_heads > 64) throw Error(path + ": more than 64 query heads per KV head is not supported");
  if (c.head_dim > 2048) throw Error(path + ": head_dim above 2048 is not supported");
  model->rope_inv_freq_ = rope_inverse_frequencies(c);
  // GGUF files of Llama 3.1+ carry the llama3 rope scaling as per-frequency divisors.
  if (model->gguf_ != nullptr) {
    if (const gguf::TensorInfo* t = model->gguf_->tensor("rope_freqs.weight"); t != nullptr) {
      if (t->shape.size() != 1 || t->shape[0] != c.head_dim / 2)
        throw Error(path + ": tensor 'rope_freqs.weight' must have head_dim / 2 = " + std::to_string(c.head_dim / 2) + " entries");
      std::vector<float> factors(c.head_dim / 2);
      to_f32(gguf::to_dtype(t->type), t->data, factors.data(), factors.size());
      for (size_t i = 0; i < factors.size(); ++i) model->rope_inv_freq_[i] /= factors[i];
    }
  }
  return model;
}

void Model::load_hf_directory(const std::string& dir) {
  config_ = load_hf_config((fs::path(dir) / "config.json").string());
  checkpoint_ = std::make_unique<safetensors::Checkpoint>(safetensors::Checkpoint::open_directory(dir));
  const ModelConfig& c = config_;
  auto get = [&](const std::string& name, std::vector<int64_t> shape) {
    const safetensors::TensorView* t = checkpoint_->find(name);
    if (t == nullptr) throw Error(dir + ": tensor '" + name + "' is missing from the checkpoint");
    return expect_shape(FoundTensor{t->file, name, t->dtype, t->shape, t->data}, std::move(shape));
  };
  const int64_t h = c.hidden_size;
  embedding_ = as_matrix(get("model.embed_tokens.weight", {c.vocab_size, h}));
  final_norm_ = as_vector(get("model.norm.weight", {h}));
  if (c.tie_word_embeddings || checkpoint_->find("lm_head.weight") == nullptr) {
    if (!c.tie_word_embeddings) throw Error(dir + ": tensor 'lm_head.weight' is missing (and tie_word_embeddings is false)");
    lm_head_ = embedding_;
  } else {
    lm_head_ = as_matrix(get("lm_head.weight", {c.vocab_size, h}));
  }
  // Layers are added as their tensors are found, so a num_hidden_layers larger
  // than the checkpoint fails at the first missing tensor before anything is
  // sized from it.
  const std::string last_layer = hf_layer_tensor(c.num_layers - 1, "input_layernorm.weight");
  if (checkpoint_->find(last_layer) == nullptr)
    throw Error(dir + ": tensor '" + last_layer + "' is missing from the checkpoint (num_hidden_layers is " +
                std::to_string(c.num_layers) + ")");
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& w = layers_.emplace_back();
    auto t = [&](const std::string& suffix, std::vector<int64_t> shape) { return get(hf_layer_tensor(l, suffix), shape); };
    w.attn_norm = as_vector(t("input_layernorm.weight", {h}));
    w.wq = as_matrix(t("self_attn.q_proj.weight", {c.q_dim(), h}));
    w.wk = as_matrix(t("self_attn.k_proj.weight", {c.kv_dim(), h}));
    w.wv = as_matrix(t("self_attn.v_proj.weight", {c.kv_dim(), h}));
    if (c.attention_bias) {
      w.bq = as_vector(t("self_attn.q_proj.bias", {c.q_dim()}));
      w.bk = as_vector(t("self_attn.k_proj.bias", {c.kv_dim()}));
      w.bv = as_vector(t("self_attn.v_proj.bias", {c.kv_dim()}));
    }
    if (c.qk_norm) {
      w.q_norm = as_vector(t("self_attn.q_norm.weight", {c.head_dim}));
      w.k_norm = as_vector(t("self_attn.k_norm.weight", {c.head_dim}));
    }
    w.wo = as_matrix(t("self_attn.o_proj.weight", {h, c.q_dim()}));
    w.mlp_norm = as_vector(t("post_attention_layernorm.weight", {h}));
    w.w_gate = as_matrix(t("mlp.gate_proj.weight", {c.intermediate_size, h}));
    w.w_up = as_matrix(t("mlp.up_proj.weight", {c.intermediate_size, h}));
    w.w_down = as_matrix(t("mlp.down_proj.weight", {h, c.intermediate_size}));
  }
}

size_t Model::bytes_per_decode_token() const {
  size_t bytes = lm_head_.bytes();
  for (const LayerWeights& w : layers_) {
    for (const WeightMatrix* m : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) bytes += m->bytes();
  }
  return bytes;
}

}  // namespace podkv
