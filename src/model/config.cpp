#include "model/config.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv {

using nlohmann::json;

namespace {

const json* field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t required_int(const json& j, const char* key, const std::string& source) {
  const json* v = field(j, key);
  if (v == nullptr) throw Error(source + ": missing field '" + key + "'");
  if (!v->is_number_integer()) throw Error(source + ": field '" + key + "' must be an integer");
  return v->get<int64_t>();
}

int64_t optional_int(const json& j, const char* key, int64_t fallback, const std::string& source) {
  const json* v = field(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer()) throw Error(source + ": field '" + key + "' must be an integer");
  return v->get<int64_t>();
}

double optional_number(const json& j, const char* key, double fallback, const std::string& source) {
  const json* v = field(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_number()) throw Error(source + ": field '" + key + "' must be a number");
  return v->get<double>();
}

bool optional_bool(const json& j, const char* key, bool fallback, const std::string& source) {
  const json* v = field(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) throw Error(source + ": field '" + key + "' must be true or false");
  return v->get<bool>();
}

// An integer field that the config keeps as `int`: a value outside int's range
// would be truncated silently (4294967302 layers would load as 6).
int narrow_int(int64_t v, const char* key, const std::string& source) {
  if (v < INT32_MIN || v > INT32_MAX)
    throw Error(source + ": field '" + key + "' = " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}

// Upper bounds of the sizes, far above any released model (the largest have
// ~128 layers, hidden 16384, head_dim 256, a 256k vocabulary), and small enough
// that every product the engine derives from them (q_dim and kv_dim as int,
// weight elements, parameters, KV bytes per token and per sequence) fits its
// type with room to spare. Checked before anything is sized from the config.
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxHidden = int64_t{1} << 17;
constexpr int64_t kMaxIntermediate = int64_t{1} << 19;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxHeadDim = 65536;
constexpr int64_t kMaxContext = INT32_MAX;
constexpr int64_t kMaxAttentionWidth = int64_t{1} << 20;  // num_heads · head_dim (q_dim)
constexpr int64_t kMaxKvStreams = int64_t{1} << 20;       // layers · KV heads
constexpr int64_t kMaxKvEntriesPerToken = int64_t{1} << 28;  // layers · KV heads · head_dim

// rope_scaling (transformers 4) or rope_parameters (transformers 5) object.
RopeScaling parse_rope_scaling(const json& j, const std::string& where, const std::string& source,
                               int64_t max_position_embeddings) {
  RopeScaling s;
  std::string type = "default";
  if (const json* t = field(j, "rope_type")) type = t->get<std::string>();
  else if (const json* t2 = field(j, "type")) type = t2->get<std::string>();
  const std::string at = where + ".";
  if (type == "default") return s;
  if (type == "linear") {
    s.type = RopeScalingType::Linear;
    s.factor = optional_number(j, "factor", 1.0, source + ": " + at);
  } else if (type == "llama3") {
    s.type = RopeScalingType::Llama3;
    for (const char* key : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}) {
      if (field(j, key) == nullptr) throw Error(source + ": missing field '" + at + key + "' for llama3 rope scaling");
    }
    s.factor = j["factor"].get<double>();
    s.low_freq_factor = j["low_freq_factor"].get<double>();
    s.high_freq_factor = j["high_freq_factor"].get<double>();
    s.original_max_position_embeddings = j["original_max_position_embeddings"].get<int64_t>();
  } else if (type == "yarn") {
    s.type = RopeScalingType::Yarn;
    if (field(j, "factor") == nullptr) throw Error(source + ": missing field '" + at + "factor' for yarn rope scaling");
    // DeepSeek's two mscales scale the attention another way; none of the supported models has them.
    for (const char* key : {"mscale", "mscale_all_dim"})
      if (field(j, key) != nullptr) throw Error(source + ": field '" + at + key + "' of yarn rope scaling is not supported");
    s.factor = optional_number(j, "factor", 1.0, source + ": " + at);
    s.original_max_position_embeddings =
        optional_int(j, "original_max_position_embeddings", max_position_embeddings, source + ": " + at);
    s.beta_fast = optional_number(j, "beta_fast", 32.0, source + ": " + at);
    s.beta_slow = optional_number(j, "beta_slow", 1.0, source + ": " + at);
    s.attention_factor = optional_number(j, "attention_factor", 0.0, source + ": " + at);
    s.truncate = optional_bool(j, "truncate", true, source + ": " + at);
    if (s.original_max_position_embeddings <= 0 || !(s.beta_fast > 0) || !(s.beta_slow > 0) || s.attention_factor < 0)
      throw Error(source + ": field '" + where + "': yarn's original_max_position_embeddings, beta_fast and beta_slow "
                  "must be positive, and attention_factor not negative");
  } else {
    throw Error(source + ": field '" + where + "': rope type '" + type +
                "' is not supported (supported: default, linear, llama3, yarn)");
  }
  if (!(s.factor > 0)) throw Error(source + ": field '" + at + "factor' must be positive");
  return s;
}

}  // namespace

int64_t ModelConfig::parameter_count() const {
  const int64_t h = hidden_size;
  int64_t attention = h * q_dim() + 2 * h * kv_dim() + q_dim() * h;
  if (attention_bias) attention += q_dim() + 2 * kv_dim();
  if (qk_norm) attention += 2 * head_dim;
  const int64_t mlp = 3 * h * intermediate_size;
  const int64_t per_layer = attention + mlp + 2 * h;
  int64_t total = per_layer * num_layers + static_cast<int64_t>(vocab_size) * h + h;
  if (!tie_word_embeddings) total += static_cast<int64_t>(vocab_size) * h;
  return total;
}

ShapeDifference shape_difference(const ModelConfig& a, const ModelConfig& b) {
  const std::pair<const char*, std::pair<int64_t, int64_t>> fields[] = {
      {"vocab_size", {a.vocab_size, b.vocab_size}},
      {"hidden_size", {a.hidden_size, b.hidden_size}},
      {"intermediate_size", {a.intermediate_size, b.intermediate_size}},
      {"num_hidden_layers", {a.num_layers, b.num_layers}},
      {"num_attention_heads", {a.num_heads, b.num_heads}},
      {"num_key_value_heads", {a.num_kv_heads, b.num_kv_heads}},
      {"head_dim", {a.head_dim, b.head_dim}},
      {"tie_word_embeddings", {a.tie_word_embeddings, b.tie_word_embeddings}},
      {"attention_bias", {a.attention_bias, b.attention_bias}},
      {"qk_norm", {a.qk_norm, b.qk_norm}},
  };
  for (const auto& [field, values] : fields)
    if (values.first != values.second) return {field, values.first, values.second};
  return {};
}

int64_t ModelConfig::dense_kv_bytes_per_token(int bytes_per_element) const {
  return 2LL * num_layers * num_kv_heads * head_dim * bytes_per_element;
}

ModelConfig parse_hf_config(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": expected a JSON object");
  ModelConfig c;
  const json* arch = field(j, "architectures");
  if (arch == nullptr || !arch->is_array() || arch->empty() || !(*arch)[0].is_string())
    throw Error(source + ": missing field 'architectures'");
  c.architecture = (*arch)[0].get<std::string>();
  const bool qwen2 = c.architecture == "Qwen2ForCausalLM";
  const bool qwen3 = c.architecture == "Qwen3ForCausalLM";
  const bool mistral = c.architecture == "MistralForCausalLM";
  if (c.architecture != "LlamaForCausalLM" && !qwen2 && !qwen3 && !mistral)
    throw Error(source + ": architectures: '" + c.architecture +
                "' is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                "Qwen3ForCausalLM)");

  auto required = [&](const char* key) { return narrow_int(required_int(j, key, source), key, source); };
  auto optional = [&](const char* key, int fallback) {
    return narrow_int(optional_int(j, key, fallback, source), key, source);
  };
  c.vocab_size = required("vocab_size");
  c.hidden_size = required("hidden_size");
  c.intermediate_size = required("intermediate_size");
  c.num_layers = required("num_hidden_layers");
  c.num_heads = required("num_attention_heads");
  c.num_kv_heads = optional("num_key_value_heads", c.num_heads);
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  c.head_dim = optional("head_dim", c.head_dim);
  c.rms_norm_eps = optional_number(j, "rms_norm_eps", 1e-6, source);
  c.max_position_embeddings = optional_int(j, "max_position_embeddings", 2048, source);
  c.tie_word_embeddings = optional_bool(j, "tie_word_embeddings", false, source);
  c.attention_bias = qwen2 || optional_bool(j, "attention_bias", false, source);
  c.qk_norm = qwen3;
  if (optional_bool(j, "mlp_bias", false, source))
    throw Error(source + ": field 'mlp_bias': MLP biases are not supported");
  if (const json* act = field(j, "hidden_act"); act != nullptr && *act != "silu")
    throw Error(source + ": field 'hidden_act': '" + act->dump() + "' is not supported (only silu)");

  // Sliding-window attention changes which tokens a query sees; podkv runs
  // these architectures with full attention only.
  const bool window_on = qwen2 || qwen3 ? optional_bool(j, "use_sliding_window", false, source) : true;
  if (const json* w = field(j, "sliding_window"); w != nullptr && window_on && (mistral || qwen2 || qwen3)) {
    if (!w->is_number_integer() || w->get<int64_t>() < c.max_position_embeddings)
      throw Error(source + ": field 'sliding_window' = " + w->dump() +
                  ": sliding-window attention is not supported (set it to null)");
  }
  // transformers 5 lists each layer's kind; a sliding one is refused for the same reason.
  if (const json* types = field(j, "layer_types"); types != nullptr && types->is_array()) {
    for (const json& t : *types)
      if (!t.is_string() || t.get<std::string>() != "full_attention")
        throw Error(source + ": field 'layer_types' holds " + t.dump() +
                    ": only full_attention layers are supported");
  }

  // transformers 5 keeps theta and scaling in rope_parameters; 4 at the top level.
  if (const json* rp = field(j, "rope_parameters"); rp != nullptr && rp->is_object()) {
    c.rope_theta = optional_number(*rp, "rope_theta", 10000.0, source + ": rope_parameters");
    c.rope_scaling = parse_rope_scaling(*rp, "rope_parameters", source, c.max_position_embeddings);
  } else {
    c.rope_theta = optional_number(j, "rope_theta", 10000.0, source);
    if (const json* rs = field(j, "rope_scaling")) {
      if (!rs->is_object()) throw Error(source + ": field 'rope_scaling' must be an object");
      c.rope_scaling = parse_rope_scaling(*rs, "rope_scaling", source, c.max_position_embeddings);
    }
  }

  c.bos_token_id = optional("bos_token_id", -1);
  if (const json* eos = field(j, "eos_token_id")) {
    auto add = [&](const json& e) {
      if (!e.is_number_integer()) throw Error(source + ": field 'eos_token_id' must be an integer or a list of them");
      c.eos_token_ids.push_back(narrow_int(e.get<int64_t>(), "eos_token_id", source));
    };
    if (eos->is_array()) {
      for (const auto& e : *eos) add(e);
    } else if (eos->is_number_integer()) {
      add(*eos);
    }
  }
  if (const json* dt = field(j, "torch_dtype"); dt != nullptr && dt->is_string()) c.torch_dtype = dt->get<std::string>();
  if (const json* dt = field(j, "dtype"); dt != nullptr && dt->is_string()) c.torch_dtype = dt->get<std::string>();
  validate_config(c, source);
  return c;
}

void validate_config(const ModelConfig& c, const std::string& source) {
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) throw Error(source + ": field '" + name + "' must be positive, got " + std::to_string(v));
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.num_layers, "num_hidden_layers");
  positive(c.num_heads, "num_attention_heads");
  positive(c.num_kv_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.max_position_embeddings, "max_position_embeddings");
  auto at_most = [&](int64_t v, int64_t max, const char* name) {
    if (v > max)
      throw Error(source + ": field '" + name + "' = " + std::to_string(v) + " is above the supported maximum " +
                  std::to_string(max));
  };
  at_most(c.vocab_size, kMaxVocab, "vocab_size");
  at_most(c.hidden_size, kMaxHidden, "hidden_size");
  at_most(c.intermediate_size, kMaxIntermediate, "intermediate_size");
  at_most(c.num_layers, kMaxLayers, "num_hidden_layers");
  at_most(c.num_heads, kMaxHeads, "num_attention_heads");
  at_most(c.num_kv_heads, kMaxHeads, "num_key_value_heads");
  at_most(c.head_dim, kMaxHeadDim, "head_dim");
  at_most(c.max_position_embeddings, kMaxContext, "max_position_embeddings");
  // The fields are bounded above, so these int64 products cannot overflow.
  auto product_at_most = [&](int64_t v, int64_t max, const std::string& what) {
    if (v > max)
      throw Error(source + ": " + what + " = " + std::to_string(v) + " is above the supported maximum " +
                  std::to_string(max));
  };
  product_at_most(int64_t{c.num_heads} * c.head_dim, kMaxAttentionWidth, "num_attention_heads × head_dim");
  product_at_most(int64_t{c.num_layers} * c.num_kv_heads, kMaxKvStreams, "num_hidden_layers × num_key_value_heads");
  product_at_most(int64_t{c.num_layers} * c.num_kv_heads * c.head_dim, kMaxKvEntriesPerToken,
                  "num_hidden_layers × num_key_value_heads × head_dim");
  if (c.num_heads % c.num_kv_heads != 0)
    throw Error(source + ": num_attention_heads (" + std::to_string(c.num_heads) +
                ") is not a multiple of num_key_value_heads (" + std::to_string(c.num_kv_heads) + ")");
  if (c.head_dim % 2 != 0) throw Error(source + ": head_dim must be even for RoPE, got " + std::to_string(c.head_dim));
  if (!(c.rms_norm_eps > 0)) throw Error(source + ": field 'rms_norm_eps' must be positive");
  if (!(c.rope_theta > 0)) throw Error(source + ": field 'rope_theta' must be positive");
}

ModelConfig load_hf_config(const std::string& path) {
  const std::string text = read_file_bounded(path, kMaxSmallJsonBytes);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
  try {
    return parse_hf_config(j, path);
  } catch (const json::exception& e) {
    throw Error(path + ": unexpected value type: " + e.what());
  }
}

std::vector<float> rope_inverse_frequencies(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    // transformers computes base ** (2i / d) in float32 and inverts it.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    inv[i] = 1.0f / std::pow(static_cast<float>(c.rope_theta), exponent);
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScalingType::Linear) {
    for (float& f : inv) f = static_cast<float>(f / s.factor);
  } else if (s.type == RopeScalingType::Llama3) {
    // transformers' _compute_llama3_parameters: long wavelengths are divided by
    // the factor, short ones kept, and the band between blended smoothly.
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      double scaled = wavelen > low_wavelen ? f / s.factor : f;
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium) {
        const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        scaled = (1.0 - smooth) * scaled / s.factor + smooth * scaled;
      }
      f = static_cast<float>(scaled);
    }
  } else if (s.type == RopeScalingType::Yarn) {
    // transformers' _compute_yarn_parameters: frequencies below the ramp (fewer than beta_slow
    // rotations over the original context) are interpolated (divided by the factor), those above it
    // (more than beta_fast) kept, and the ramp between them blended linearly, in float32 as torch does.
    const double d = c.head_dim, base = c.rope_theta, old_len = static_cast<double>(s.original_max_position_embeddings);
    auto correction_dim = [&](double rotations) {
      return d * std::log(old_len / (rotations * 2 * M_PI)) / (2 * std::log(base));
    };
    double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
    if (s.truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0), high = std::min(high, d - 1);
    if (low == high) high += 0.001;
    for (int i = 0; i < half; ++i) {
      const float ramp = std::clamp((static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low), 0.0f, 1.0f);
      const float extrapolation = 1.0f - ramp;  // the share of the unscaled frequency
      // inv[i] is 1 / base^(2i/d) already (transformers' extrapolated frequency); the interpolated one
      // divides by factor * base^(2i/d), the power taken again in float32 as torch takes it.
      const float pos_freq = std::pow(static_cast<float>(c.rope_theta), static_cast<float>(2 * i) / static_cast<float>(c.head_dim));
      const float interpolated = 1.0f / (static_cast<float>(s.factor) * pos_freq);
      inv[i] = interpolated * (1.0f - extrapolation) + inv[i] * extrapolation;
    }
  }
  return inv;
}

double rope_attention_factor(const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  if (s.type != RopeScalingType::Yarn) return 1.0;
  if (s.attention_factor > 0) return s.attention_factor;
  return s.factor <= 1.0 ? 1.0 : 0.1 * std::log(s.factor) + 1.0;
}

double attention_score_scale(const ModelConfig& c) {
  const double a = rope_attention_factor(c);
  return a * a / std::sqrt(static_cast<double>(c.head_dim));
}

json config_to_hf_json(const ModelConfig& c) {
  json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = c.architecture == "Qwen2ForCausalLM"   ? "qwen2"
                    : c.architecture == "Qwen3ForCausalLM" ? "qwen3"
                    : c.architecture == "MistralForCausalLM" ? "mistral" : "llama";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["hidden_act"] = "silu";
  if (c.architecture != "Qwen2ForCausalLM") j["attention_bias"] = c.attention_bias;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids;
  if (c.rope_scaling.type == RopeScalingType::Linear) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
  } else if (c.rope_scaling.type == RopeScalingType::Llama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  } else if (c.rope_scaling.type == RopeScalingType::Yarn) {
    const RopeScaling& y = c.rope_scaling;
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", y.factor},
                         {"original_max_position_embeddings", y.original_max_position_embeddings},
                         {"beta_fast", y.beta_fast}, {"beta_slow", y.beta_slow}, {"truncate", y.truncate}};
    if (y.attention_factor > 0) j["rope_scaling"]["attention_factor"] = y.attention_factor;
  }
  j["torch_dtype"] = c.torch_dtype.empty() ? "float32" : c.torch_dtype;
  return j;
}

}  // namespace podkv
