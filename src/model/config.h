// The transformer's hyper-parameters, read from a Hugging Face config.json
// (transformers 4 and 5 layouts) or from GGUF metadata.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace podkv {

enum class RopeScalingType { None, Linear, Llama3, Yarn };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::None;
  double factor = 1.0;
  double low_freq_factor = 1.0;    // llama3 only
  double high_freq_factor = 4.0;   // llama3 only
  int64_t original_max_position_embeddings = 8192;  // llama3 and yarn
  double beta_fast = 32.0, beta_slow = 1.0;         // yarn: the ramp's ends, in rotations
  double attention_factor = 0.0;                    // yarn: 0 = 0.1 ln(factor) + 1
  bool truncate = true;                             // yarn: the ramp's ends rounded outwards
};

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // GGUF llama files store Q/K rows permuted so that RoPE rotates adjacent
  // pairs (2i, 2i+1); Hugging Face checkpoints rotate halves (i, i + d/2).
  bool rope_interleaved = false;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections have biases (Qwen2)
  // Each head of q and k is RMS-normalized (weights [head_dim], eps rms_norm_eps) before RoPE (Qwen3).
  bool qk_norm = false;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
  std::string torch_dtype;      // as written in the config, informational

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  int64_t parameter_count() const;
  // Dense KV-cache bytes per token with float32 entries: 2 · L · H_kv · d · 4.
  int64_t dense_kv_bytes_per_token(int bytes_per_element = 4) const;
};

// Parses a config.json object; `source` names the file in error messages.
// Throws Error naming the field for missing or unsupported settings.
ModelConfig parse_hf_config(const nlohmann::json& json, const std::string& source);
ModelConfig load_hf_config(const std::string& config_path);

// Checks the internal consistency of a config (positive sizes, heads divide,
// rope dims even); throws Error naming `source` and the field.
void validate_config(const ModelConfig& config, const std::string& source);

// Inverse frequencies of RoPE, [head_dim / 2], with the configured scaling
// applied exactly as transformers' rope init functions do.
std::vector<float> rope_inverse_frequencies(const ModelConfig& config);
// YaRN's attention factor (transformers multiplies RoPE's cos and sin by it, so q and k each by it);
// 1 for every other RoPE.
double rope_attention_factor(const ModelConfig& config);
// The softmax scale of q·k: 1 / sqrt(head_dim), times YaRN's attention factor squared (podkv keeps q
// and k unscaled, so that the cache holds the same keys with and without the factor).
double attention_score_scale(const ModelConfig& config);

nlohmann::json config_to_hf_json(const ModelConfig& config);

// The first field (by its config.json name) in which the weights' shapes of
// `a` and `b` differ: vocabulary, widths, layers, heads, tied embeddings,
// biases. Empty `field` when the same tensors fit both.
struct ShapeDifference {
  const char* field = nullptr;
  int64_t a = 0, b = 0;
};
ShapeDifference shape_difference(const ModelConfig& a, const ModelConfig& b);

}  // namespace podkv
