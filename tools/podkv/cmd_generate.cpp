// podkv generate: stream a completion, or print one JSON object with --json.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "model/forward.h"
#include "model/generate.h"
#include "ops/matmul.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

struct GenerateCommand {
  std::string model;
  PromptOptions prompt;
  int n = 64;
  int64_t context = 4096;
  int threads = 0;
  GenerateOptions gen;
  bool json = false;
  bool ignore_eos = false;
};

void run(GenerateCommand& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  auto model = Model::load(o.model);
  auto tokenizer = load_model_tokenizer(*model);
  const ModelConfig& c = model->config();
  std::vector<int32_t> ids = prompt_ids(o.prompt, tokenizer.get(), c);
  if (o.context <= 0) throw Error("-c: context must be positive");
  const int64_t context = std::min<int64_t>(o.context, c.max_position_embeddings);
  if (static_cast<int64_t>(ids.size()) > context)
    throw Error("prompt of " + std::to_string(ids.size()) + " tokens is longer than the context (-c " +
                std::to_string(context) + ")");
  for (const auto& s : o.gen.stop_strings) if (s.empty()) throw Error("--stop: a stop string must not be empty");
  o.gen.max_new_tokens = static_cast<int>(std::min<int64_t>(o.n, context - static_cast<int64_t>(ids.size())));
  o.gen.stop_at_eos = !o.ignore_eos;
  o.gen.eos_ids.assign(c.eos_token_ids.begin(), c.eos_token_ids.end());
  auto cache = make_dense_cache(c, context);
  Runner runner(*model, *cache);
  const int seq = cache->add_sequence();
  std::function<void(const std::string&)> stream;
  if (!o.json) stream = [](const std::string& piece) { std::fwrite(piece.data(), 1, piece.size(), stdout); std::fflush(stdout); };
  GenerateResult r = generate(runner, seq, tokenizer.get(), ids, o.gen, stream);
  if (o.json) {
    nlohmann::json j;
    j["prompt_ids"] = r.prompt_ids;
    j["generated_ids"] = r.generated_ids;
    j["text"] = r.text;
    j["stop_reason"] = r.stop_reason;
    j["timings"] = {{"prefill_seconds", r.prefill_seconds},
                    {"decode_seconds", r.decode_seconds},
                    {"prefill_tokens_per_s", r.prefill_seconds > 0 ? r.prompt_ids.size() / r.prefill_seconds : 0.0},
                    {"decode_tokens_per_s", r.decode_seconds > 0 ? r.generated_ids.size() / r.decode_seconds : 0.0}};
    j["kv_bytes_in_use"] = r.kv_bytes_in_use;
    j["kv_bytes_reserved"] = r.kv_bytes_reserved;
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    if (tokenizer == nullptr) {
      for (size_t i = 0; i < r.generated_ids.size(); ++i) std::printf("%s%d", i ? " " : "", r.generated_ids[i]);
    }
    std::printf("\n");
    std::fprintf(stderr, "prefill %zu tokens: %.1f tok/s; decode %zu tokens: %.1f tok/s\n", r.prompt_ids.size(),
                 r.prefill_seconds > 0 ? r.prompt_ids.size() / r.prefill_seconds : 0.0, r.generated_ids.size(),
                 r.decode_seconds > 0 ? r.generated_ids.size() / r.decode_seconds : 0.0);
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateCommand>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text from a prompt");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file")->required();
  add_prompt_options(*cmd, o->prompt, "-p,--prompt");
  cmd->add_option("-n,--n-predict", o->n, "tokens to generate")->capture_default_str();
  cmd->add_option("-c,--ctx-size", o->context, "context length (prompt + generated)")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  cmd->add_option("--temperature,--temp", o->gen.sampling.temperature, "sampling temperature, 0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", o->gen.sampling.top_k, "keep the k most likely tokens, 0 = off")->capture_default_str();
  cmd->add_option("--top-p", o->gen.sampling.top_p, "nucleus sampling threshold, 1 = off")->capture_default_str();
  cmd->add_option("--min-p", o->gen.sampling.min_p, "drop tokens below min-p times the top probability, 0 = off")->capture_default_str();
  cmd->add_option("--repeat-penalty", o->gen.sampling.repetition_penalty, "repetition penalty, 1 = off")->capture_default_str();
  cmd->add_option("--repeat-last-n", o->gen.sampling.repetition_window, "tokens the penalty looks back over, 0 = all")->capture_default_str();
  cmd->add_option("--seed", o->gen.sampling.seed, "random seed")->capture_default_str();
  cmd->add_option("--stop", o->gen.stop_strings, "stop when this string is generated (repeatable)");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "do not stop at EOS tokens");
  cmd->add_flag("--json", o->json, "print one JSON object with ids, text and timings");
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
