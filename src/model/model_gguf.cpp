// Loading a model from a GGUF file of the llama, qwen2 or qwen3 architecture
// (llama.cpp's tensor names and metadata keys, which take the architecture's
// name as their prefix).
#include <algorithm>
#include <climits>

#include "io/gguf.h"
#include "model/model.h"
#include "util/error.h"

namespace podkv {

void Model::load_gguf(const std::string& path) {
  gguf_ = std::make_unique<gguf::File>(gguf::File::open(path));
  const gguf::File& f = *gguf_;
  const std::string arch = f.get_string("general.architecture");
  // qwen2 adds q/k/v biases, qwen3 a per-head RMSNorm of q and k; both rotate halves (llama.cpp's
  // NEOX RoPE) where llama.cpp's converter permutes llama's Q/K rows for pairwise RoPE.
  const bool qwen2 = arch == "qwen2", qwen3 = arch == "qwen3";
  if (arch != "llama" && !qwen2 && !qwen3)
    throw Error(path + ": general.architecture is '" + arch + "', only 'llama', 'qwen2' and 'qwen3' are supported");
  ModelConfig& c = config_;
  auto key = [&](const char* suffix) { return arch + "." + suffix; };
  // The config keeps these as int: a larger value is an error, never truncated.
  auto narrow = [&](int64_t v, const std::string& name) {
    if (v < INT32_MIN || v > INT32_MAX)
      throw Error(path + ": metadata '" + name + "' = " + std::to_string(v) + " is out of range");
    return static_cast<int>(v);
  };
  auto get_int = [&](const std::string& name) { return narrow(f.get_int(name), name); };
  auto get_int_or = [&](const std::string& name, int64_t fallback) { return narrow(f.get_int_or(name, fallback), name); };
  c.architecture = qwen2 ? "Qwen2ForCausalLM" : qwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM";
  c.attention_bias = qwen2;
  c.qk_norm = qwen3;
  c.hidden_size = get_int(key("embedding_length"));
  c.num_layers = get_int(key("block_count"));
  c.intermediate_size = get_int(key("feed_forward_length"));
  c.num_heads = get_int(key("attention.head_count"));
  c.num_kv_heads = get_int_or(key("attention.head_count_kv"), c.num_heads);
  c.head_dim = get_int_or(key("attention.key_length"), c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  c.max_position_embeddings = f.get_int_or(key("context_length"), 2048);
  c.rms_norm_eps = f.get_float_or(key("attention.layer_norm_rms_epsilon"), 1e-5);
  c.rope_theta = f.get_float_or(key("rope.freq_base"), 10000.0);
  c.rope_interleaved = !qwen2 && !qwen3;
  if (const gguf::MetaValue* type = f.find(key("rope.scaling.type")); type != nullptr) {
    if (type->string_value == "linear") {
      c.rope_scaling.type = RopeScalingType::Linear;
      c.rope_scaling.factor = f.get_float(key("rope.scaling.factor"));
    } else if (type->string_value == "yarn") {
      // llama.cpp's YaRN: beta_fast 32, beta_slow 1, attention factor 0.1 ln(factor) + 1 (the defaults).
      c.rope_scaling.type = RopeScalingType::Yarn;
      c.rope_scaling.factor = f.get_float(key("rope.scaling.factor"));
      c.rope_scaling.original_max_position_embeddings = f.get_int(key("rope.scaling.original_context_length"));
      if (!(c.rope_scaling.factor > 0) || c.rope_scaling.original_max_position_embeddings <= 0)
        throw Error(path + ": " + key("rope.scaling.factor") + " and " + key("rope.scaling.original_context_length") +
                    " must be positive for yarn");
    } else if (type->string_value != "none") {
      throw Error(path + ": " + key("rope.scaling.type") + " '" + type->string_value + "' is not supported");
    }
  }
  const gguf::MetaValue* tokens = f.find("tokenizer.ggml.tokens");
  c.vocab_size = get_int_or(key("vocab_size"), tokens != nullptr ? static_cast<int64_t>(tokens->strings.size()) : 0);
  c.bos_token_id = get_int_or("tokenizer.ggml.bos_token_id", -1);
  if (const int eos = get_int_or("tokenizer.ggml.eos_token_id", -1); eos >= 0) c.eos_token_ids = {eos};
  c.tie_word_embeddings = f.tensor("output.weight") == nullptr;
  validate_config(c, path);

  auto get = [&](const std::string& name, std::vector<int64_t> expected) {
    const gguf::TensorInfo* t = f.tensor(name);
    if (t == nullptr) throw Error(path + ": tensor '" + name + "' is missing");
    std::vector<int64_t> shape(t->shape.rbegin(), t->shape.rend());  // ggml order is fastest first
    if (shape != expected)
      throw Error(path + ": tensor '" + name + "' has shape " + shape_string(shape) + ", expected " +
                  shape_string(expected) + " from the metadata");
    return std::make_pair(gguf::to_dtype(t->type), static_cast<const void*>(t->data));
  };
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    auto [dtype, data] = get(name, {rows, cols});
    return WeightMatrix{dtype, rows, cols, data};
  };
  auto vector = [&](const std::string& name, int64_t n) {
    auto [dtype, data] = get(name, {n});
    std::vector<float> v(static_cast<size_t>(n));
    to_f32(dtype, data, v.data(), v.size());
    return v;
  };
  const int64_t h = c.hidden_size;
  embedding_ = matrix("token_embd.weight", c.vocab_size, h);
  lm_head_ = c.tie_word_embeddings ? embedding_ : matrix("output.weight", c.vocab_size, h);
  final_norm_ = vector("output_norm.weight", h);
  // Layers are added as their tensors are found, so a block_count larger than
  // the file fails at the first missing tensor before anything is sized from it.
  if (f.tensor("blk." + std::to_string(c.num_layers - 1) + ".attn_norm.weight") == nullptr)
    throw Error(path + ": tensor 'blk." + std::to_string(c.num_layers - 1) + ".attn_norm.weight' is missing (" + key("block_count") + " is " +
                std::to_string(c.num_layers) + ")");
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& w = layers_.emplace_back();
    w.attn_norm = vector(p + "attn_norm.weight", h);
    w.wq = matrix(p + "attn_q.weight", c.q_dim(), h);
    w.wk = matrix(p + "attn_k.weight", c.kv_dim(), h);
    w.wv = matrix(p + "attn_v.weight", c.kv_dim(), h);
    if (c.attention_bias) {
      w.bq = vector(p + "attn_q.bias", c.q_dim());
      w.bk = vector(p + "attn_k.bias", c.kv_dim());
      w.bv = vector(p + "attn_v.bias", c.kv_dim());
    }
    if (c.qk_norm) {
      w.q_norm = vector(p + "attn_q_norm.weight", c.head_dim);
      w.k_norm = vector(p + "attn_k_norm.weight", c.head_dim);
    }
    w.wo = matrix(p + "attn_output.weight", h, c.q_dim());
    w.mlp_norm = vector(p + "ffn_norm.weight", h);
    w.w_gate = matrix(p + "ffn_gate.weight", c.intermediate_size, h);
    w.w_up = matrix(p + "ffn_up.weight", c.intermediate_size, h);
    w.w_down = matrix(p + "ffn_down.weight", h, c.intermediate_size);
  }
}

}  // namespace podkv
