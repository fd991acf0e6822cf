// podkv info: architecture, parameters, dtype and KV-cache bytes per token.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

struct InfoCommand {
  std::string model;
  bool json = false;
};

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
      {"kv_bytes_per_token", kv_per_token},
      {"kv_dtype", "float32"},
  };
  if (model) j["weight_bytes_per_decode_token"] = model->bytes_per_decode_token();
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
  std::printf("kv bytes per token: %lld (float32 keys and values, dense)\n", static_cast<long long>(kv_per_token));
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto o = std::make_shared<InfoCommand>();
  CLI::App* cmd = app.add_subcommand("info", "describe a model (a directory with only config.json is enough)");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file")->required();
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
