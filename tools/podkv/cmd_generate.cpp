// podkv generate: stream a completion, or print one JSON object with --json.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "engine/runner.h"
#include "engine/generate.h"
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
  KvOptions kv;
  bool json = false;
  bool ignore_eos = false;
};

// The sampler checks these too, but by its parameter names and only after the
// model is loaded; here the message names the option and comes first.
void check_sampling_options(const SamplingParams& s) {
  auto bad = [](const char* option, const std::string& rule, double v) {
    throw Error(std::string(option) + ": must be " + rule + ", got " + std::to_string(v));
  };
  if (!(std::isfinite(s.temperature) && s.temperature >= 0)) bad("--temperature", ">= 0", s.temperature);
  if (s.top_k < 0) bad("--top-k", ">= 0", s.top_k);
  if (!(s.top_p > 0 && s.top_p <= 1)) bad("--top-p", "in (0, 1]", s.top_p);
  if (!(s.min_p >= 0 && s.min_p <= 1)) bad("--min-p", "in [0, 1]", s.min_p);
  if (!(std::isfinite(s.repetition_penalty) && s.repetition_penalty > 0)) bad("--repeat-penalty", "> 0", s.repetition_penalty);
  if (s.repetition_window < 0) bad("--repeat-last-n", ">= 0", s.repetition_window);
}

void run(GenerateCommand& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  check_sampling_options(o.gen.sampling);
  if (o.n < 0) throw Error("-n: must not be negative, got " + std::to_string(o.n));
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
  std::optional<float> tau;
  const KvLayout layout = kv_layout_from_options(o.kv, c, o.model, &tau);
  auto cache = make_cache(layout, context);
  Runner runner(*model, *cache);
  runner.set_tau(tau);
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
    j["kv_policy"] = o.kv.policy;
    // The tokens in the cache: the last generated token is never fed back.
    j["dense_kv_bytes"] = cache->length(seq) * c.dense_kv_bytes_per_token(4);
    j["distant_parts"] = runner.stats().distant_parts;
    j["skipped_distant_parts"] = runner.stats().skipped_distant_parts;
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    if (tokenizer == nullptr) {
      for (size_t i = 0; i < r.generated_ids.size(); ++i) std::printf("%s%d", i ? " " : "", r.generated_ids[i]);
    }
    std::printf("\n");
    std::fflush(stdout);
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
  add_kv_options(*cmd, o->kv);
  cmd->add_flag("--json", o->json, "print one JSON object with ids, text and timings");
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
