// podkv info: architecture, parameters, dtype and KV-cache bytes per token.
#include <climits>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "backend/cuda_backend.h"
#include "backend/make_backend.h"
#include "commands.h"
#include "common.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

// The RoPE scaling as one phrase: "no scaling", "linear x4", "llama3 x8 (original 8192)",
// "yarn x4 (original 32768, attention factor 1.139)".
std::string rope_scaling_text(const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  char buf[160];
  switch (s.type) {
    case RopeScalingType::None: return "no scaling";
    case RopeScalingType::Linear: std::snprintf(buf, sizeof buf, "linear x%g", s.factor); break;
    case RopeScalingType::Llama3:
      std::snprintf(buf, sizeof buf, "llama3 x%g (original %lld)", s.factor,
                    static_cast<long long>(s.original_max_position_embeddings));
      break;
    case RopeScalingType::Yarn:
      std::snprintf(buf, sizeof buf, "yarn x%g (original %lld, attention factor %.4g)", s.factor,
                    static_cast<long long>(s.original_max_position_embeddings), rope_attention_factor(c));
      break;
  }
  return buf;
}

struct InfoCommand {
  std::string model;
  bool json = false;
  KvOptions kv;
  int64_t context = 0;
  int batch = 1;
  std::string memory;
  std::string device = "cpu";
  std::string cuda_weights = "bf16";
};

// --device cuda: the weights uploaded (random bf16 ones for a config-only directory), then the
// device's name, the bytes the weights take there and the memory left for KV caches.
nlohmann::json device_report(const InfoCommand& o, const Model* model) {
  nlohmann::json j;
  std::unique_ptr<Model> shapes;
  if (model == nullptr) model = (shapes = Model::shapes_only(o.model)).get();
  auto backend = make_backend(o.device, *model, o.cuda_weights);
#if defined(PODKV_HAVE_CUDA)
  if (auto* cuda = dynamic_cast<CudaBackend*>(backend.get())) {
    size_t free_bytes = 0, total = 0;
    cuda->ops().memory_info(free_bytes, total);
    j = {{"device", cuda->ops().device_name()}, {"device_weight_bytes", cuda->weight_bytes()},
         {"device_weights_random", shapes != nullptr}, {"device_free_bytes", free_bytes},
         {"device_total_bytes", total}};
  }
#endif
  return j;
}

// KV bytes per sequence of `context` tokens under the policy, against dense,
// and how many sequences fit in --memory (analytic: needs no weights).
nlohmann::json kv_report(const InfoCommand& o, const ModelConfig& c) {
  const KvDType dtype = parse_kv_dtype(o.kv.kv_dtype.empty() ? "f32" : o.kv.kv_dtype);
  const int64_t entry = static_cast<int64_t>(kv_entry_bytes(dtype, c.head_dim));
  if (o.context <= 0) throw Error("--context: must be positive");
  if (o.batch < 1) throw Error("--batch: must be at least 1");
  const KvLayout layout = kv_layout_from_options(o.kv, c, o.model);
  const KvLayout dense = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
  const int64_t per_seq = layout.retained_vectors(o.context) * entry;
  const int64_t dense_per_seq = dense.retained_vectors(o.context) * entry;
  // The config's bounds keep a sequence's bytes below 2^62; a batch of them can overflow.
  int64_t dense_for_batch = 0;
  if (__builtin_mul_overflow(dense_per_seq, static_cast<int64_t>(o.batch), &dense_for_batch))
    throw Error("--batch: " + std::to_string(o.batch) + " sequences of " + std::to_string(o.context) +
                " tokens need more KV bytes than a 64-bit count holds");
  nlohmann::json j = {{"kv_policy", o.kv.policy}, {"context", o.context}, {"kv_dtype", kv_dtype_name(dtype)},
                      {"kv_bytes_per_sequence", per_seq}, {"dense_kv_bytes_per_sequence", dense_per_seq},
                      {"kv_saving", 1.0 - static_cast<double>(per_seq) / static_cast<double>(dense_per_seq)},
                      {"batch", o.batch}, {"kv_bytes_for_batch", per_seq * o.batch},
                      {"dense_kv_bytes_for_batch", dense_for_batch}};
  if (!o.memory.empty()) {
    const size_t memory = parse_bytes(o.memory, "--memory");
    j["memory"] = memory;
    if (memory < static_cast<size_t>(per_seq)) {
      const int64_t window_bytes = 2 * static_cast<int64_t>(c.num_layers) * c.num_kv_heads * entry *
                                   layout.window_tokens(o.context);
      throw Error("--memory: " + o.memory + " cannot hold one sequence of " + std::to_string(o.context) +
                  " tokens under --kv " + o.kv.policy + " (needs " + std::to_string(per_seq) +
                  " bytes; the sink and recent window alone take " + std::to_string(window_bytes) + ")");
    }
    j["max_batch"] = static_cast<int64_t>(memory / static_cast<size_t>(per_seq));
    j["dense_max_batch"] = static_cast<int64_t>(memory / static_cast<size_t>(dense_per_seq));
  }
  return j;
}

bool has_weights(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(path)) return true;  // a GGUF file
  return fs::exists(fs::path(path) / "model.safetensors") || fs::exists(fs::path(path) / "model.safetensors.index.json");
}

void run(const InfoCommand& o) {
  std::unique_ptr<Model> model;
  ModelConfig c;
  std::string dtype;
  if (has_weights(o.model)) {
    model = Model::load(o.model);
    c = model->config();
    dtype = dtype_name(model->weight_dtype());
  } else {
    c = Model::load_config(o.model);
    dtype = c.torch_dtype.empty() ? "unknown (no weights)" : c.torch_dtype + " (from config.json; no weights)";
  }
  const int64_t kv_per_token = c.dense_kv_bytes_per_token(4);
  nlohmann::json j = {
      {"model", o.model},
      {"architecture", c.architecture},
      {"parameters", c.parameter_count()},
      {"dtype", dtype},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_layers", c.num_layers},
      {"num_heads", c.num_heads},
      {"num_kv_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rope_theta", c.rope_theta},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"rope_scaling", rope_scaling_text(c)},
      {"qk_norm", c.qk_norm},
      {"attention_bias", c.attention_bias},
      {"kv_bytes_per_token", kv_per_token},
      {"kv_dtype", "float32"},
  };
  if (model) j["weight_bytes_per_decode_token"] = model->bytes_per_decode_token();
  if (o.device != "cpu") j.update(device_report(o, model.get()));
  if (o.context > 0) j.update(kv_report(o, c));
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("model:              %s\n", o.model.c_str());
  std::printf("architecture:       %s\n", c.architecture.c_str());
  std::printf("parameters:         %lld (%.2fM)\n", static_cast<long long>(c.parameter_count()), c.parameter_count() / 1e6);
  std::printf("dtype:              %s\n", dtype.c_str());
  std::printf("layers:             %d\n", c.num_layers);
  std::printf("hidden / ffn:       %d / %d\n", c.hidden_size, c.intermediate_size);
  std::printf("heads / kv heads:   %d / %d (head_dim %d)\n", c.num_heads, c.num_kv_heads, c.head_dim);
  std::printf("vocab:              %d\n", c.vocab_size);
  std::printf("context:            %lld\n", static_cast<long long>(c.max_position_embeddings));
  std::printf("rope:               theta %g, %s\n", c.rope_theta, rope_scaling_text(c).c_str());
  if (c.qk_norm || c.attention_bias)
    std::printf("attention extras:   %s\n", c.qk_norm ? "per-head q/k norms" : "q/k/v biases");
  std::printf("kv bytes per token: %lld (float32 keys and values, dense)\n", static_cast<long long>(kv_per_token));
  if (j.contains("device")) {
    std::printf("device:             %s, weights %.2f GB%s, %.2f GB free of %.2f GB for KV caches\n",
                j["device"].get<std::string>().c_str(), j["device_weight_bytes"].get<double>() / 1e9,
                j["device_weights_random"].get<bool>() ? " (random, no weight files)" : "",
                j["device_free_bytes"].get<double>() / 1e9, j["device_total_bytes"].get<double>() / 1e9);
  }
  if (o.context > 0) {
    std::printf("kv policy:          %s at %lld tokens (%s entries)\n", o.kv.policy.c_str(),
                static_cast<long long>(o.context), (o.kv.kv_dtype.empty() ? "f32" : o.kv.kv_dtype.c_str()));
    std::printf("kv per sequence:    %lld bytes (dense %lld, saving %.1f%%)\n",
                j["kv_bytes_per_sequence"].get<long long>(), j["dense_kv_bytes_per_sequence"].get<long long>(),
                100.0 * j["kv_saving"].get<double>());
    if (j.contains("max_batch"))
      std::printf("max batch:          %lld in %s (dense %lld)\n", j["max_batch"].get<long long>(), o.memory.c_str(),
                  j["dense_max_batch"].get<long long>());
  }
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto o = std::make_shared<InfoCommand>();
  CLI::App* cmd = app.add_subcommand("info", "describe a model (a directory with only config.json is enough)");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file")->required();
  cmd->add_flag("--json", o->json, "print one JSON object");
  add_kv_options(*cmd, o->kv, "f32");
  cmd->add_option("--context", o->context, "report KV bytes per sequence of this many tokens under --kv")
      ->check(CLI::Range(int64_t{1}, int64_t{INT32_MAX}));
  cmd->add_option("--batch", o->batch, "sequences for the KV total")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--memory", o->memory, "KV memory budget (e.g. 16G) for the largest batch that fits");
  cmd->add_option("--device", o->device, "cuda: upload the weights and report the GPU memory they take")
      ->capture_default_str();
  cmd->add_option("--cuda-weights", o->cuda_weights, "weight matrices on the GPU: bf16 or f32")->capture_default_str();
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
