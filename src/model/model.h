// A Llama-family model's weights, used in place from memory-mapped files.
//
// Load from a Hugging Face directory (config.json + model.safetensors or
// sharded safetensors with model.safetensors.index.json) or from a GGUF file of
// the llama, qwen2 or qwen3 architecture. Every tensor is checked against the config when
// loaded (name, shape, dtype); the error names the file and the tensor.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "ops/matmul.h"

namespace podkv {

namespace gguf { class File; }
namespace safetensors { class Checkpoint; }

struct LayerWeights {
  std::vector<float> attn_norm;   // [hidden]
  WeightMatrix wq;                // [H * d, hidden]
  WeightMatrix wk;                // [H_kv * d, hidden]
  WeightMatrix wv;                // [H_kv * d, hidden]
  std::vector<float> bq, bk, bv;  // [H * d], [H_kv * d], [H_kv * d]; empty without biases
  std::vector<float> q_norm, k_norm;  // [d] each, every head's RMSNorm weights (Qwen3); empty without
  WeightMatrix wo;                // [hidden, H * d]
  std::vector<float> mlp_norm;    // [hidden]
  WeightMatrix w_gate;            // [intermediate, hidden]
  WeightMatrix w_up;              // [intermediate, hidden]
  WeightMatrix w_down;            // [hidden, intermediate]
};

class Model {
 public:
  // PATH is a model directory or a .gguf file. Throws Error naming the file and tensor.
  static std::unique_ptr<Model> load(const std::string& path);
  // Only the configuration (a directory with config.json alone is enough).
  static ModelConfig load_config(const std::string& path);
  // The configuration of PATH and every weight's shape in bf16, with no weight
  // data (every WeightMatrix::data null; norms of ones, biases of zeros): for a
  // backend that fills the weights itself (CudaBackend's random weights, to
  // benchmark an 8B shape from a config.json alone).
  static std::unique_ptr<Model> shapes_only(const std::string& path);
  // False for shapes_only models.
  bool has_weights() const { return embedding_.data != nullptr; }

  ~Model();
  const ModelConfig& config() const { return config_; }
  const std::string& path() const { return path_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  const WeightMatrix& embedding() const { return embedding_; }  // [vocab, hidden]
  const WeightMatrix& lm_head() const { return lm_head_; }      // [vocab, hidden]; the embedding when tied
  const std::vector<float>& final_norm() const { return final_norm_; }
  const std::vector<float>& rope_inv_freq() const { return rope_inv_freq_; }
  DType weight_dtype() const { return layers_.front().wq.dtype; }
  // Bytes of weights one decode step reads (every layer's matrices and the LM head).
  size_t bytes_per_decode_token() const;
  // The GGUF file when loaded from one (its tokenizer lives in the metadata).
  const gguf::File* gguf_file() const { return gguf_.get(); }

 private:
  Model() = default;
  void load_hf_directory(const std::string& dir);
  void load_gguf(const std::string& file);

  std::string path_;
  ModelConfig config_;
  std::vector<LayerWeights> layers_;
  WeightMatrix embedding_;
  WeightMatrix lm_head_;
  std::vector<float> final_norm_;
  std::vector<float> rope_inv_freq_;
  std::unique_ptr<safetensors::Checkpoint> checkpoint_;
  std::unique_ptr<gguf::File> gguf_;
  std::vector<std::vector<float>> owned_;  // weights widened at load (e.g. f16 norms)
};

// "[2, 3]": a tensor shape for error messages.
std::string shape_string(const std::vector<int64_t>& shape);

// Hugging Face tensor names of a layer ("model.layers.3.self_attn.q_proj.weight").
std::string hf_layer_tensor(int layer, const std::string& suffix);

}  // namespace podkv
