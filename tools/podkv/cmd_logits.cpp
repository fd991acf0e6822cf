// podkv logits: float32 logits [tokens, vocab] of every position to a safetensors file.
#include "commands.h"
#include "common.h"
#include "io/safetensors.h"
#include "backend/make_backend.h"
#include "engine/runner.h"
#include "ops/matmul.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

struct LogitsCommand {
  std::string model;
  PromptOptions prompt;
  std::string out;
  int threads = 0;
  bool exact_quant = false;
  int64_t chunk = 256;
  KvOptions kv;
  std::string device = "cpu";       // --device
  std::string cuda_weights = "bf16";
};

void run(const LogitsCommand& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  apply_exact_quant(o.exact_quant);
  auto model = Model::load(o.model);
  auto tokenizer = load_model_tokenizer(*model);
  const ModelConfig& c = model->config();
  std::vector<int32_t> ids = prompt_ids(o.prompt, tokenizer.get(), c);
  if (static_cast<int64_t>(ids.size()) > c.max_position_embeddings)
    throw Error("input of " + std::to_string(ids.size()) + " tokens is longer than the model's context (" +
                std::to_string(c.max_position_embeddings) + ")");
  if (o.chunk <= 0) throw Error("--chunk: must be positive");
  std::optional<float> tau;
  const KvLayout layout = kv_layout_from_options(o.kv, c, o.model, &tau);
  auto cache = make_cache(layout, static_cast<int64_t>(ids.size()), 1, o.chunk, kv_dtype_from_options(o.kv, *model));
  auto backend = make_backend(o.device, *model, o.cuda_weights);
  Runner runner(*backend, *cache);
  runner.set_tau(tau);
  runner.set_chunk_size(o.chunk);
  std::vector<float> logits;
  runner.forward(cache->add_sequence(), ids, true, logits);
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  safetensors::write_file(o.out, {
      {"logits", DType::F32, {static_cast<int64_t>(ids.size()), c.vocab_size}, logits.data(), logits.size() * 4},
      {"input_ids", DType::I64, {static_cast<int64_t>(ids.size())}, ids64.data(), ids64.size() * 8}});
}

}  // namespace

void add_logits_command(CLI::App& app) {
  auto o = std::make_shared<LogitsCommand>();
  CLI::App* cmd = app.add_subcommand("logits", "write the logits of every position to a safetensors file");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file")->required();
  add_prompt_options(*cmd, o->prompt, "--text");
  cmd->add_option("--out", o->out, "output .safetensors (tensors logits [tokens, vocab] F32, input_ids I64)")->required();
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  add_exact_quant_option(*cmd, o->exact_quant);
  cmd->add_option("--device", o->device, "where the forward runs: cpu or cuda")->capture_default_str();
  cmd->add_option("--cuda-weights", o->cuda_weights, "weight matrices on the GPU: bf16 or f32")->capture_default_str();
  add_kv_options(*cmd, o->kv);
  cmd->add_option("--chunk", o->chunk, "prefill chunk length in tokens")->capture_default_str();
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
