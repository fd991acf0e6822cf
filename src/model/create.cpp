#include "model/create.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "io/safetensors.h"
#include "model/model.h"
#include "util/error.h"

namespace podkv {

namespace fs = std::filesystem;

ModelConfig preset_config(const std::string& name, int vocab_size) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = vocab_size;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-5;
  c.bos_token_id = -1;
  if (name == "tiny") {
    c.hidden_size = 64, c.intermediate_size = 192, c.num_layers = 4, c.num_heads = 4, c.num_kv_heads = 2;
    c.max_position_embeddings = 4096;
  } else if (name == "small") {
    c.hidden_size = 256, c.intermediate_size = 768, c.num_layers = 8, c.num_heads = 8, c.num_kv_heads = 4;
    c.max_position_embeddings = 8192;
  } else if (name == "100m") {
    c.hidden_size = 768, c.intermediate_size = 2048, c.num_layers = 12, c.num_heads = 12, c.num_kv_heads = 4;
    c.max_position_embeddings = 8192;
    c.tie_word_embeddings = true;
  } else if (name == "1b") {
    // Llama 3.2 1B's body (GQA 32/8, head_dim 64): about 2 GB in bf16, larger than a server's L3,
    // so that decode benchmarks read the weights from memory.
    c.hidden_size = 2048, c.intermediate_size = 8192, c.num_layers = 16, c.num_heads = 32, c.num_kv_heads = 8;
    c.max_position_embeddings = 8192;
    c.tie_word_embeddings = true;
  } else {
    throw Error("--preset: unknown preset '" + name + "' (known: tiny, small, 100m, 1b)");
  }
  c.head_dim = c.hidden_size / c.num_heads;
  return c;
}

namespace {

// Normal draws from a 64-bit Mersenne Twister by Box-Muller, written out so the
// weights are the same with every standard library.
class NormalSource {
 public:
  explicit NormalSource(uint64_t seed) : rng_(seed) {}
  float next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = (static_cast<double>(rng_() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(r * std::sin(2 * M_PI * u2));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(2 * M_PI * u2));
  }

 private:
  std::mt19937_64 rng_;
  float spare_ = 0;
  bool has_spare_ = false;
};

struct Tensors {
  DType dtype;
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::vector<std::vector<uint8_t>> bytes;

  void add(const std::string& name, std::vector<int64_t> shape, NormalSource& rng, double std, bool ones) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::vector<uint8_t> out(dtype_bytes(dtype, static_cast<size_t>(n)));
    for (int64_t i = 0; i < n; ++i) {
      const float v = ones ? 1.0f : static_cast<float>(rng.next() * std);
      if (dtype == DType::F32) std::memcpy(out.data() + 4 * i, &v, 4);
      else {
        const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
    }
    shapes.emplace_back(name, std::move(shape));
    bytes.push_back(std::move(out));
  }
};

}  // namespace

void create_random_model(const ModelConfig& c, DType dtype, uint64_t seed, double std, const std::string& dir) {
  check(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16, "--dtype: only f32, f16 and bf16 can be created");
  validate_config(c, "model config");
  NormalSource rng(seed);
  Tensors t{dtype, {}, {}};
  const int64_t h = c.hidden_size;
  t.add("model.embed_tokens.weight", {c.vocab_size, h}, rng, std, false);
  for (int l = 0; l < c.num_layers; ++l) {
    t.add(hf_layer_tensor(l, "input_layernorm.weight"), {h}, rng, std, true);
    t.add(hf_layer_tensor(l, "self_attn.q_proj.weight"), {c.q_dim(), h}, rng, std, false);
    t.add(hf_layer_tensor(l, "self_attn.k_proj.weight"), {c.kv_dim(), h}, rng, std, false);
    t.add(hf_layer_tensor(l, "self_attn.v_proj.weight"), {c.kv_dim(), h}, rng, std, false);
    if (c.attention_bias) {
      t.add(hf_layer_tensor(l, "self_attn.q_proj.bias"), {c.q_dim()}, rng, std, false);
      t.add(hf_layer_tensor(l, "self_attn.k_proj.bias"), {c.kv_dim()}, rng, std, false);
      t.add(hf_layer_tensor(l, "self_attn.v_proj.bias"), {c.kv_dim()}, rng, std, false);
    }
    if (c.qk_norm) {
      t.add(hf_layer_tensor(l, "self_attn.q_norm.weight"), {c.head_dim}, rng, std, true);
      t.add(hf_layer_tensor(l, "self_attn.k_norm.weight"), {c.head_dim}, rng, std, true);
    }
    t.add(hf_layer_tensor(l, "self_attn.o_proj.weight"), {h, c.q_dim()}, rng, std, false);
    t.add(hf_layer_tensor(l, "post_attention_layernorm.weight"), {h}, rng, std, true);
    t.add(hf_layer_tensor(l, "mlp.gate_proj.weight"), {c.intermediate_size, h}, rng, std, false);
    t.add(hf_layer_tensor(l, "mlp.up_proj.weight"), {c.intermediate_size, h}, rng, std, false);
    t.add(hf_layer_tensor(l, "mlp.down_proj.weight"), {h, c.intermediate_size}, rng, std, false);
  }
  t.add("model.norm.weight", {h}, rng, std, true);
  if (!c.tie_word_embeddings) t.add("lm_head.weight", {c.vocab_size, h}, rng, std, false);

  std::vector<safetensors::TensorToWrite> out;
  for (size_t i = 0; i < t.shapes.size(); ++i)
    out.push_back({t.shapes[i].first, dtype, t.shapes[i].second, t.bytes[i].data(), t.bytes[i].size()});
  fs::create_directories(dir);
  safetensors::write_file((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  ModelConfig written = c;
  written.torch_dtype = dtype == DType::F32 ? "float32" : dtype == DType::BF16 ? "bfloat16" : "float16";
  const std::string config_path = (fs::path(dir) / "config.json").string();
  {
    std::ofstream f(config_path + ".tmp");
    f << config_to_hf_json(written).dump(2) << "\n";
    if (!f) throw Error(config_path + ": cannot write");
  }
  fs::rename(config_path + ".tmp", config_path);
}

}  // namespace podkv
