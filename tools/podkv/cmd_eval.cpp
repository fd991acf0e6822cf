// podkv eval: dense, PoD and the baselines on the same inputs in one run:
// quality (agreement with dense, perplexity, passkey / needle / key-value
// retrieval accuracy) and the KV bytes each cache held. Writes DIR/results.json,
// DIR/table.md and heatmap PNGs; progress on stderr; --resume continues.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <tuple>

#include "backend/make_backend.h"
#include "commands.h"
#include "common.h"
#include "eval/checkpoint.h"
#include "eval/report.h"
#include "eval/runner.h"
#include "eval/tasks.h"
#include "ops/matmul.h"
#include "policy/policy_spec.h"
#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

namespace fs = std::filesystem;

struct EvalCommand {
  std::string model;
  eval::TaskSettings task;
  std::vector<std::string> kv = {};
  KvOptions shared;  // --sink, --recent, --pod-config, --pod-group, --tau, --budget, --window, --pool
  std::string out;
  int64_t chunk = 256;
  std::string device = "cpu";  // --device
  std::string cuda_weights = "bf16";
  int threads = 0;
  bool resume = false;
  bool no_progress = false;
  bool show_answers = false;
};

std::string escape_newlines(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '\n' ? std::string("\\n") : std::string(1, c);
  return out;
}

// --show-answers: one line per grid prompt and method, in item order.
void print_answers(const std::vector<eval::TaskItem>& items, const std::vector<eval::EvalPolicy>& policies,
                   const std::vector<eval::ItemRecord>& records) {
  std::map<std::tuple<int, std::string, std::string>, const eval::ItemRecord*> by_key;  // (item, label, options)
  for (const eval::ItemRecord& r : records) by_key[{r.item, r.policy, r.options}] = &r;
  for (const eval::TaskItem& item : items)
    for (const eval::EvalPolicy& p : policies) {
      const auto found = by_key.find({item.index, p.label, p.options.dump()});
      if (found == by_key.end()) continue;
      const eval::ItemRecord& r = *found->second;
      std::printf("%-14s %6lld tokens, depth %3g%%: answer %s, generated \"%s\" (%s), KV %.2f MiB\n", p.label.c_str(),
                  static_cast<long long>(item.length), item.depth, item.answer.c_str(),
                  escape_newlines(r.generated).c_str(), r.correct ? "right" : "wrong",
                  static_cast<double>(r.kv_bytes) / (1 << 20));
    }
}

eval::EvalPolicy make_policy(NamedPolicy named) {
  eval::EvalPolicy p;
  p.label = std::move(named.label);
  p.layout = std::move(named.layout);
  p.tau = named.tau;
  p.options = std::move(named.options);
  // float32 unless the policy names its entry type, so that the figures compare methods, not entry types.
  const KvDType dtype = parse_kv_dtype(named.kv_dtype.empty() ? "f32" : named.kv_dtype);
  p.make_cache = [dtype](const KvLayout& layout, int64_t length, int64_t chunk) {
    return make_cache(layout, length, 1, chunk, dtype);
  };
  return p;
}

// "[#######.............]  35%  elapsed 0:42  left 1:18" on stderr: redrawn in
// place on a terminal, a line per 10% otherwise.
class EvalProgressBar {
 public:
  explicit EvalProgressBar(bool enabled) : enabled_(enabled), tty_(isatty(2) != 0), t0_(Clock::now()) {}
  void update(int64_t done, int64_t total) {
    if (!enabled_ || total <= 0) return;
    const double fraction = std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0_).count();
    const int tenth = static_cast<int>(fraction * 10);
    if (tty_ ? elapsed - last_draw_ < 0.2 && done < total : tenth == last_tenth_) return;
    last_draw_ = elapsed;
    last_tenth_ = tenth;
    const int width = 30, filled = static_cast<int>(fraction * width);
    std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
    const std::string left = fraction > 0 ? clock_string(elapsed * (1 - fraction) / fraction) : "?";
    std::fprintf(stderr, "%s[%s] %3.0f%%  elapsed %s  left %s%s", tty_ ? "\r" : "", bar.c_str(), fraction * 100,
                 clock_string(elapsed).c_str(), left.c_str(), tty_ ? "   " : "\n");
    if (tty_ && done >= total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  static std::string clock_string(double seconds) {
    const long s = static_cast<long>(seconds + 0.5);
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    return buf;
  }
  bool enabled_, tty_;
  Clock::time_point t0_;
  double last_draw_ = -1;
  int last_tenth_ = -1;
};

// A policy's own weights (model=DIR) must read the same tokens as -m: the
// prompts are built with -m's tokenizer (the shape is checked with --kv).
void check_same_tokenizer(const std::string& model, const std::string& other, const std::string& what) {
  if (!fs::is_directory(model) || !fs::is_directory(other)) return;  // GGUF: the vocabulary is checked by its size
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const fs::path a = fs::path(model) / name, b = fs::path(other) / name;
    if (!fs::exists(a) && !fs::exists(b)) continue;
    if (!fs::exists(a) || !fs::exists(b) || read_file_bounded(a.string(), size_t{1} << 30) != read_file_bounded(b.string(), size_t{1} << 30))
      throw Error(what + ": its " + name + " differs from the one of -m, whose tokens the prompts are");
  }
}

// Default grid lengths: 1/8, 1/4 and 1/2 of the model's context, and the
// context less 64 tokens of room for the answer.
std::vector<int64_t> default_lengths(int64_t context) {
  std::vector<int64_t> lengths;
  for (int64_t l : {context / 8, context / 4, context / 2, context - 64})
    if (l > 0 && (lengths.empty() || l > lengths.back())) lengths.push_back(l);
  return lengths;
}

void run(EvalCommand& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  if (o.chunk < 1) throw Error("--chunk: must be at least 1");
  const std::vector<PolicySpec> specs = parse_policy_specs(o.kv);
  const ModelConfig config = Model::load_config(o.model);
  const int64_t context = config.max_position_embeddings;
  if (eval::is_grid_task(o.task.task) && o.task.lengths.empty()) o.task.lengths = default_lengths(context);
  if (eval::is_window_task(o.task.task) && o.task.context == 0) o.task.context = std::min<int64_t>(1024, context);
  eval::validate_settings(o.task, context);
  std::vector<eval::EvalPolicy> policies;
  for (const PolicySpec& spec : specs) policies.push_back(make_policy(resolve_policy(spec, o.shared, config, o.model)));

  auto model = Model::load(o.model);
  auto tokenizer = load_model_tokenizer(*model);
  if (tokenizer == nullptr)
    throw Error(o.model + ": the model has no tokenizer; podkv eval builds its inputs from text (add tokenizer.json)");
  const int32_t bos = tokenizer->bos_id() >= 0 ? tokenizer->bos_id() : config.bos_token_id;
  const std::vector<eval::TaskItem> items = eval::build_items(o.task, *tokenizer, bos);
  if (eval::is_window_task(o.task.task) && static_cast<int>(items.size()) < o.task.effective_samples())
    std::fprintf(stderr, "note: the --data text holds only %zu window(s) of %lld tokens (--samples %d)\n", items.size(),
                 static_cast<long long>(o.task.context), o.task.effective_samples());

  auto backend = make_backend(o.device, *model, o.cuda_weights);
  // Policies with their own weights (model=DIR), loaded once per folder.
  std::map<std::string, std::pair<std::unique_ptr<Model>, std::unique_ptr<Backend>>> others;
  for (eval::EvalPolicy& p : policies) {
    if (!p.options.contains("model")) continue;
    const std::string path = p.options["model"].get<std::string>();
    auto& [other, other_backend] = others[fs::weakly_canonical(path).string()];
    if (other == nullptr) {
      check_same_tokenizer(o.model, path, "--kv '" + p.label + "': model=" + path);
      other = Model::load(path);
      other_backend = make_backend(o.device, *other, o.cuda_weights);
    }
    p.model = other.get();
    p.backend = other_backend.get();
  }
  eval::RunSettings run_settings;
  run_settings.chunk = o.chunk;
  run_settings.backend = backend.get();
  nlohmann::json settings = eval::to_json(o.task);
  settings["model"] = o.model;
  settings["chunk"] = o.chunk;
  eval::Checkpoint checkpoint(o.out, settings, o.resume);
  if (o.resume && !checkpoint.records().empty())
    std::fprintf(stderr, "resuming: %zu (item, method) results already in %s\n", checkpoint.records().size(), o.out.c_str());

  EvalProgressBar bar(!o.no_progress);
  eval::run_eval(*model, *tokenizer, o.task, run_settings, policies, items, checkpoint.done(),
                 [&](const eval::ItemRecord& r) { checkpoint.add(r); },
                 [&](int64_t done, int64_t total) { bar.update(done, total); });

  eval::ReportInput in;
  in.model_path = o.model;
  in.config = config;
  in.settings = o.task;
  in.run = run_settings;
  in.policies = &policies;
  in.items = &items;
  in.records = &checkpoint.records();
  const nlohmann::json results = eval::build_results(in);
  const std::vector<std::string> written = eval::write_report(o.out, results);
  const std::string table = eval::markdown_table(results);
  std::fwrite(table.data(), 1, table.size(), stdout);
  if (o.show_answers && eval::is_grid_task(o.task.task)) {
    std::printf("\n");
    print_answers(items, policies, checkpoint.records());
  }
  if (eval::is_grid_task(o.task.task) && written.size() < 3)
    std::fprintf(stderr, "note: this podkv was built without Cairo: no heatmap PNG\n");
  for (const std::string& path : written) std::fprintf(stderr, "wrote %s\n", path.c_str());
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalCommand>();
  o->task.context = 0;
  o->task.depths = {0, 25, 50, 75, 100};
  CLI::App* cmd = app.add_subcommand("eval", "compare KV policies on quality and memory (tables, heatmaps)");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file (with a tokenizer)")->required();
  cmd->add_option("--task", o->task.task, std::string("task: ") + eval::known_tasks())->required();
  cmd->add_option("--kv", o->kv, "policies, comma-separated, each NAME[:KEY=VALUE...] (keys: " +
                                     std::string(known_policy_settings()) + ")")->required();
  cmd->add_option("--data", o->task.data_files, "text files (agreement, perplexity: the windows; niah: the haystack)");
  cmd->add_option("--out", o->out, "output directory (results.json, table.md, PNGs, progress)")->required();
  cmd->add_option("-c,--context", o->task.context, "agreement/perplexity: tokens per window (default: min(1024, model context))");
  cmd->add_option("--prefill", o->task.prefill, "agreement/perplexity: tokens of the first forward call (default: context/2)");
  cmd->add_option("--decode-chunk", o->task.decode_chunk, "agreement/perplexity: tokens per later forward call")->capture_default_str();
  cmd->add_option("--lengths", o->task.lengths, "grid tasks: prompt lengths in tokens (default: 1/8, 1/4, 1/2 of the model's context and the context - 64)")
      ->delimiter(',');
  cmd->add_option("--depths", o->task.depths, "grid tasks: needle depths in percent of the haystack")->delimiter(',')->capture_default_str();
  cmd->add_option("--samples", o->task.samples, "windows (agreement, perplexity; default 4) or prompts per grid cell (default 1)");
  cmd->add_option("--seed", o->task.seed, "seed of the passkeys, answers, keys and haystack offsets")->capture_default_str();
  cmd->add_option("--needle", o->task.needle, "niah: the needle sentence; {answer} is replaced by the answer")->capture_default_str();
  cmd->add_option("--question", o->task.question, "niah: the question at the end of the prompt")->capture_default_str();
  cmd->add_option("--answer", o->task.answer, "niah: a fixed answer (default: a random 7-digit number per prompt)");
  cmd->add_option("-n,--max-new-tokens", o->task.max_new_tokens, "grid tasks: tokens to generate (default: the answer's + 4)");
  cmd->add_option("--chunk", o->chunk, "longest chunk a forward call is cut into")->capture_default_str();
  add_kv_settings(*cmd, o->shared, "f32, unless a policy names dtype=");
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  cmd->add_option("--device", o->device, "where the forward runs: cpu or cuda")->capture_default_str();
  cmd->add_option("--cuda-weights", o->cuda_weights, "weight matrices on the GPU: bf16 or f32")->capture_default_str();
  cmd->add_flag("--resume", o->resume, "continue the run in --out (same settings), skipping what is done");
  cmd->add_flag("--no-progress", o->no_progress, "no progress bar");
  cmd->add_flag("--show-answers", o->show_answers,
                "grid tasks: after the table, each prompt's expected answer and what each method generated");
  cmd->add_flag_callback("--no-bos", [o] { o->task.bos = false; },
                         "no BOS before the windows or prompts (for a model trained on text without one)");
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
