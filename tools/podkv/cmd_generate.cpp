// podkv generate: stream a completion, or print one JSON object with --json.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include <fstream>

#include "engine/generate.h"
#include "backend/make_backend.h"
#include "engine/runner.h"
#include "engine/scheduler.h"
#include "prompts_file.h"
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
  bool exact_quant = false;
  GenerateOptions gen;
  KvOptions kv;
  bool json = false;
  bool ignore_eos = false;
  std::string prompts_file;  // --prompts: one request per JSONL line
  int parallel = 1;
  std::string out_file;
  std::string kv_memory;
  std::string device = "cpu";       // --device
  std::string cuda_weights = "bf16";
  int page_tokens = 0;                // --page-tokens (0: the device's default)
  int64_t prefill_chunk = 0;          // --prefill-chunk (0: the device's default; --prompts: 256)
};

// The object `generate --json` prints (and each --prompts output line).
nlohmann::json result_json(const GenerateResult& r, const std::string& policy, KvDType dtype) {
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
  j["kv_policy"] = policy;
  j["kv_dtype"] = kv_dtype_name(dtype);
  return j;
}

std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

// --prompts: every request through one continuously batched job; output lines in input order.
void run_prompts(GenerateCommand& o, const Model& model, const Tokenizer* tokenizer, const KvLayout& layout,
                 std::optional<float> tau, KvDType dtype, int64_t context) {
  const ModelConfig& c = model.config();
  if (o.parallel < 1) throw Error("--parallel: must be at least 1, got " + std::to_string(o.parallel));
  std::vector<GenerateRequest> requests =
      read_prompts_file(o.prompts_file, tokenizer, c, o.gen, context, o.prompt.no_bos);
  const int page = page_tokens_for(o.page_tokens, o.device);
  // Every running sequence may take a prompt chunk in one step: 256 unless asked, on either device.
  const int64_t chunk = o.prefill_chunk == 0 ? prefill_chunk_for(0, "cpu") : prefill_chunk_for(o.prefill_chunk, o.device);
  auto cache = make_cache(layout, context, o.parallel, chunk, dtype, page);
  if (!o.kv_memory.empty()) cache = std::make_unique<KvCache>(layout, parse_bytes(o.kv_memory, "--kv-memory"), page, dtype);
  auto backend = make_backend(o.device, model, o.cuda_weights);
  Runner runner(*backend, *cache);
  runner.set_tau(tau);
  runner.set_chunk_size(chunk);
  Scheduler scheduler(runner, tokenizer, o.parallel);
  std::FILE* out = stdout;
  std::ofstream file;
  if (!o.out_file.empty()) {
    file.open(o.out_file, std::ios::binary | std::ios::trunc);
    if (!file) throw Error("--out: cannot write " + o.out_file);
  }
  std::vector<std::string> lines(requests.size());
  std::vector<bool> ready(requests.size(), false);
  size_t written = 0;
  const auto t0 = std::chrono::steady_clock::now();
  int64_t generated = 0;
  // A request that cannot fit the cache even alone names the option that sized it.
  try {
    scheduler.run(requests, [&](size_t index, GenerateResult& r) {
      nlohmann::json j = result_json(r, o.kv.policy, dtype);
      j["index"] = index;
      lines[index] = dump(j);
      ready[index] = true;
      generated += static_cast<int64_t>(r.generated_ids.size());
      for (; written < lines.size() && ready[written]; ++written) {
        if (file.is_open()) file << lines[written] << '\n';
        else std::fprintf(out, "%s\n", lines[written].c_str());
        lines[written].clear();
      }
    });
  } catch (const KvCacheFull& e) {
    if (o.kv_memory.empty()) throw;
    throw Error("--kv-memory " + o.kv_memory + ": " + e.what());
  }
  if (file.is_open()) {
    file.flush();
    if (!file) throw Error("--out: writing " + o.out_file + " failed");
  }
  std::fflush(stdout);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "%zu requests, %lld tokens generated in %.2f s (%.1f tok/s), %lld steps, up to %d at once\n",
               requests.size(), static_cast<long long>(generated), seconds, seconds > 0 ? generated / seconds : 0.0,
               static_cast<long long>(scheduler.steps()), scheduler.max_running());
}

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
  if (!(s.presence_penalty >= -2 && s.presence_penalty <= 2)) bad("--presence-penalty", "in [-2, 2]", s.presence_penalty);
  if (!(s.frequency_penalty >= -2 && s.frequency_penalty <= 2)) bad("--frequency-penalty", "in [-2, 2]", s.frequency_penalty);
}

void run(GenerateCommand& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  apply_exact_quant(o.exact_quant);
  check_sampling_options(o.gen.sampling);
  if (o.n < 0) throw Error("-n: must not be negative, got " + std::to_string(o.n));
  if (o.context <= 0) throw Error("-c: context must be positive");
  for (const auto& s : o.gen.stop_strings) if (s.empty()) throw Error("--stop: a stop string must not be empty");
  if (!o.prompts_file.empty() && (o.prompt.text_given || !o.prompt.ids.empty() || !o.prompt.ids_file.empty()))
    throw Error("--prompts: give the prompts in the file, not also with -p/--ids/--ids-file");
  if (o.prompts_file.empty() && (o.parallel != 1 || !o.out_file.empty() || !o.kv_memory.empty()))
    throw Error("--parallel/--out/--kv-memory need --prompts FILE");
  auto model = Model::load(o.model);
  auto tokenizer = load_model_tokenizer(*model);
  const ModelConfig& c = model->config();
  const int64_t context = std::min<int64_t>(o.context, c.max_position_embeddings);
  o.gen.stop_at_eos = !o.ignore_eos;
  o.gen.eos_ids.assign(c.eos_token_ids.begin(), c.eos_token_ids.end());
  std::optional<float> tau;
  const KvLayout layout = kv_layout_from_options(o.kv, c, o.model, &tau);
  const KvDType dtype = kv_dtype_from_options(o.kv, *model);
  if (!o.prompts_file.empty()) {
    o.gen.max_new_tokens = o.n;
    run_prompts(o, *model, tokenizer.get(), layout, tau, dtype, context);
    return;
  }
  std::vector<int32_t> ids = prompt_ids(o.prompt, tokenizer.get(), c);
  if (static_cast<int64_t>(ids.size()) > context)
    throw Error("prompt of " + std::to_string(ids.size()) + " tokens is longer than the context (-c " +
                std::to_string(context) + ")");
  o.gen.max_new_tokens = static_cast<int>(std::min<int64_t>(o.n, context - static_cast<int64_t>(ids.size())));
  const int64_t chunk = prefill_chunk_for(o.prefill_chunk, o.device);
  auto cache = make_cache(layout, context, 1, chunk, dtype, page_tokens_for(o.page_tokens, o.device));
  auto backend = make_backend(o.device, *model, o.cuda_weights);
  Runner runner(*backend, *cache);
  runner.set_tau(tau);
  runner.set_chunk_size(chunk);
  const int seq = cache->add_sequence();
  std::function<void(const std::string&)> stream;
  if (!o.json) stream = [](const std::string& piece) { std::fwrite(piece.data(), 1, piece.size(), stdout); std::fflush(stdout); };
  GenerateResult r = generate(runner, seq, tokenizer.get(), ids, o.gen, stream);
  if (o.json) {
    nlohmann::json j = result_json(r, o.kv.policy, dtype);
    // The tokens in the cache: the last generated token is never fed back.
    j["dense_kv_bytes"] = cache->length(seq) * c.num_layers * 2 * c.num_kv_heads *
                          static_cast<int64_t>(kv_entry_bytes(dtype, c.head_dim));
    j["distant_parts"] = runner.stats().distant_parts;
    j["skipped_distant_parts"] = runner.stats().skipped_distant_parts;
    std::printf("%s\n", dump(j).c_str());
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
  add_exact_quant_option(*cmd, o->exact_quant);
  cmd->add_option("--device", o->device, "where the forward runs: cpu or cuda")->capture_default_str();
  cmd->add_option("--cuda-weights", o->cuda_weights, "weight matrices on the GPU: bf16 or f32")->capture_default_str();
  cmd->add_option("--page-tokens", o->page_tokens, "tokens per KV page (0: 16 on cpu, 64 on cuda)")->capture_default_str();
  cmd->add_option("--prefill-chunk", o->prefill_chunk,
                  "prompt tokens per forward step (0: 256 on cpu, 8192 on cuda; --prompts: 256 on both)")
      ->capture_default_str();
  cmd->add_option("--temperature,--temp", o->gen.sampling.temperature, "sampling temperature, 0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", o->gen.sampling.top_k, "keep the k most likely tokens, 0 = off")->capture_default_str();
  cmd->add_option("--top-p", o->gen.sampling.top_p, "nucleus sampling threshold, 1 = off")->capture_default_str();
  cmd->add_option("--min-p", o->gen.sampling.min_p, "drop tokens below min-p times the top probability, 0 = off")->capture_default_str();
  cmd->add_option("--repeat-penalty", o->gen.sampling.repetition_penalty, "repetition penalty, 1 = off")->capture_default_str();
  cmd->add_option("--repeat-last-n", o->gen.sampling.repetition_window, "tokens the penalty looks back over, 0 = all")->capture_default_str();
  cmd->add_option("--presence-penalty", o->gen.sampling.presence_penalty,
                  "OpenAI's: subtract this from the logit of every token generated already, 0 = off")->capture_default_str();
  cmd->add_option("--frequency-penalty", o->gen.sampling.frequency_penalty,
                  "OpenAI's: subtract this times the token's count among the generated ones, 0 = off")->capture_default_str();
  cmd->add_option("--seed", o->gen.sampling.seed, "random seed")->capture_default_str();
  cmd->add_option("--stop", o->gen.stop_strings, "stop when this string is generated (repeatable)");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "do not stop at EOS tokens");
  add_kv_options(*cmd, o->kv);
  cmd->add_flag("--json", o->json, "print one JSON object with ids, text and timings");
  cmd->add_option("--prompts", o->prompts_file,
                  "JSONL file of requests ({\"prompt\": ...} or {\"ids\": [...]} per line), run as one batched job");
  cmd->add_option("--parallel", o->parallel, "--prompts: sequences decoding at once")->capture_default_str();
  cmd->add_option("--out", o->out_file, "--prompts: write the JSONL results here instead of stdout");
  cmd->add_option("--kv-memory", o->kv_memory, "--prompts: KV cache budget (e.g. 512M; default: --parallel full contexts)");
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
