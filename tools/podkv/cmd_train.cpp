// podkv train (a model from scratch), podkv adapt (PoD post-training
// adaptation of a trained model) and podkv plot-loss (a training log as a PNG).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "kv/pod_config.h"
#include "model/create.h"
#include "ops/matmul.h"
#include "plot/plot.h"
#include "train/trainer.h"
#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

namespace fs = std::filesystem;
using namespace podkv::train;

// Options common to train and adapt.
struct TrainingFlags {
  TrainOptions options;
  std::vector<std::string> data;
  std::string synthetic;        // "passkey,kv"
  double synthetic_fraction = 0;
  int64_t synthetic_min_len = 0;
  int passkey_digits = 5;
  int kv_pairs = 0;
  double val_fraction = 0.05;
  std::string resume;
  int threads = 0;
  std::string precision = "bf16";
  double peak_tflops = 0;  // > 0: the progress line shows model FLOP utilisation against it
};

void add_training_flags(CLI::App* cmd, TrainingFlags& f) {
  TrainOptions& o = f.options;
  cmd->add_option("--data", f.data, "text files to train on (tokenised and packed), or token files of podkv tokenize-data");
  cmd->add_option("--out", o.out_dir, "output checkpoint directory")->required();
  cmd->add_option("--steps", o.steps, "optimiser steps")->capture_default_str();
  cmd->add_option("--batch", o.batch, "sequences per micro-batch")->capture_default_str();
  cmd->add_option("--grad-accum", o.grad_accum, "micro-batches per optimiser step")->capture_default_str();
  cmd->add_option("--seq-len", o.seq_len, "tokens per sequence")->capture_default_str();
  cmd->add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr", o.min_lr, "learning rate at the end of the cosine (default lr/10)");
  cmd->add_option("--warmup", o.warmup, "linear warmup steps (default min(100, steps/10))");
  cmd->add_option("--weight-decay", o.adamw.weight_decay, "AdamW decoupled weight decay (matrices only)")->capture_default_str();
  cmd->add_option("--beta1", o.adamw.beta1, "AdamW beta1")->capture_default_str();
  cmd->add_option("--beta2", o.adamw.beta2, "AdamW beta2")->capture_default_str();
  cmd->add_option("--clip", o.clip, "clip gradients to this global norm (0 = off)")->capture_default_str();
  cmd->add_option("--seed", o.seed, "seed of the data order (and of the initial weights for train)")->capture_default_str();
  cmd->add_option("--train", o.train, "which parameters train: all, attention, qk")->capture_default_str();
  cmd->add_option("--synthetic", f.synthetic, "synthetic tasks to mix in, comma-separated: passkey, kv, niah (needs --data), passkey-eval");
  cmd->add_option("--synthetic-fraction", f.synthetic_fraction, "fraction of sequences that are synthetic")->capture_default_str();
  cmd->add_option("--synthetic-min-len", f.synthetic_min_len,
                  "synthetic samples of every length from N tokens to --seq-len, the rest of the sequence "
                  "training text; the accuracy samples too (0 = every sample fills its sequence)")
      ->capture_default_str();
  cmd->add_option("--passkey-digits", f.passkey_digits, "digits of a passkey")->capture_default_str();
  cmd->add_option("--kv-pairs", f.kv_pairs, "key-value pairs per kv sample (0 = as many as fit)")->capture_default_str();
  cmd->add_option("--val-fraction", f.val_fraction, "tail of the text held out for evaluation")->capture_default_str();
  cmd->add_option("--eval-every", o.eval_every, "evaluate every N steps (0 = at the start and the end)")->capture_default_str();
  cmd->add_option("--eval-batches", o.eval_batches, "validation batches per evaluation")->capture_default_str();
  cmd->add_option("--accuracy-samples", o.accuracy_samples, "synthetic samples per task for accuracy")->capture_default_str();
  cmd->add_option("--save-every", o.save_every, "checkpoint every N steps (0 = at the end)")->capture_default_str();
  cmd->add_option("--stop-at", o.stop_at, "save and stop after this step (continue later with --resume)");
  cmd->add_option("--log", o.log_path, "JSONL log (default OUT/train_log.jsonl)");
  cmd->add_option("--dump-batches", o.dump_batches,
                  "write every training micro-batch, in order, to this file (format: src/train/batch_dump.h; "
                  "validation batches are not in it)");
  cmd->add_option("--resume", f.resume, "continue from this checkpoint directory");
  cmd->add_option("-t,--threads", f.threads, "threads (all cores)");
  cmd->add_option("--device", o.device, "where the steps run: cpu or cuda")->capture_default_str();
  cmd->add_option("--peak-tflops", f.peak_tflops,
                  "the device's peak TFLOP/s (e.g. 790 for an H200's bf16 tensor cores): show model FLOP utilisation");
  cmd->add_option("--precision", f.precision,
                  "matrix products on cuda: bf16 or tf32 tensor cores, or f32 (weights and AdamW stay float32)")
      ->capture_default_str();
  cmd->add_flag("--recompute", o.recompute,
                "cuda: keep only each layer's input and recompute its activations in the backward (less memory, "
                "one more forward pass)");
}

std::string duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

// Progress on one line (rewritten in place on a terminal, every 5% otherwise).
void print_step(const StepReport& r, double peak_tflops) {
  static const bool tty = isatty(2) != 0;
  const int64_t every = std::max<int64_t>(1, r.steps / 20);
  if (!tty && r.step % every != 0 && r.step != r.steps) return;
  char mfu[32] = "";
  if (peak_tflops > 0) std::snprintf(mfu, sizeof mfu, " (MFU %.1f%%)", 100.0 * r.model_flops_per_s / 1e12 / peak_tflops);
  std::fprintf(stderr, "%sstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  %.2f TFLOP/s%s  elapsed %s  left %s%s",
               tty ? "\r" : "", static_cast<long long>(r.step), static_cast<long long>(r.steps), r.loss, r.lr,
               r.tokens_per_s, r.model_flops_per_s / 1e12, mfu, duration(r.elapsed_s).c_str(),
               duration(r.eta_s).c_str(), tty ? "   " : "\n");
  if (tty && r.step == r.steps) std::fprintf(stderr, "\n");
}

void print_eval(const EvalReport& e) {
  std::fprintf(stderr, "%seval step %lld: loss %.4f", isatty(2) ? "\r" : "", static_cast<long long>(e.step), e.loss);
  for (const auto& [name, acc] : e.accuracy) std::fprintf(stderr, "  %s accuracy %.3f", name.c_str(), acc);
  std::fprintf(stderr, "\n");
}

struct Data {
  std::unique_ptr<Corpus> corpus;
  std::unique_ptr<SyntheticTasks> tasks;
  std::unique_ptr<BatchSource> source;
  std::vector<Task> task_list;
};

Data load_data(const TrainingFlags& f, const Tokenizer& tokenizer) {
  Data d;
  if (!f.synthetic.empty()) {
    SyntheticOptions so;
    std::stringstream in(f.synthetic);
    std::string name;
    while (std::getline(in, name, ',')) so.tasks.push_back(parse_task(name));
    so.passkey_digits = f.passkey_digits;
    so.kv_pairs = f.kv_pairs;
    d.task_list = so.tasks;
    d.tasks = std::make_unique<SyntheticTasks>(tokenizer, so);
  }
  if (!f.data.empty()) d.corpus = std::make_unique<Corpus>(load_corpus(f.data, tokenizer, f.val_fraction));
  else if (f.synthetic_fraction < 1) throw Error("--data: required unless --synthetic-fraction is 1");
  if (d.corpus && f.synthetic_fraction < 1) {
    const int64_t need = f.options.seq_len + 1;
    if (static_cast<int64_t>(d.corpus->train.size()) < need)
      throw Error("--data: " + std::to_string(d.corpus->train.size()) + " training tokens (after holding out --val-fraction), fewer than one sequence (--seq-len " +
                  std::to_string(f.options.seq_len) + " + 1)");
    if (f.val_fraction > 0 && static_cast<int64_t>(d.corpus->validation.size()) < need)
      throw Error("--val-fraction: " + std::to_string(d.corpus->validation.size()) + " held-out tokens, fewer than one sequence (--seq-len " +
                  std::to_string(f.options.seq_len) + " + 1); use more data, a larger --val-fraction or --val-fraction 0");
  }
  if (d.tasks)
    for (Task t : d.task_list)
      if (d.tasks->min_seq(t) > f.options.seq_len)
        throw Error("--seq-len: " + std::to_string(f.options.seq_len) + " is too short for the " + task_name(t) +
                    " task (needs " + std::to_string(d.tasks->min_seq(t)) + " tokens)");
  d.source = std::make_unique<BatchSource>(d.corpus.get(), d.tasks.get(), f.synthetic_fraction, f.options.seed);
  if (f.synthetic_min_len > f.options.seq_len)
    throw Error("--synthetic-min-len: " + std::to_string(f.synthetic_min_len) + " is longer than --seq-len " +
                std::to_string(f.options.seq_len));
  d.source->set_synthetic_min_len(f.synthetic_min_len);
  return d;
}

// The flags train and adapt check and apply the same way, before anything is loaded.
void apply_common_flags(const TrainingFlags& f) {
  if (f.threads > 0) set_num_threads(f.threads);
  if (f.peak_tflops < 0) throw Error("--peak-tflops: must be >= 0");
}

// A model whose weights training starts from (adapt -m, train --init): a
// Hugging Face directory, since a GGUF model's interleaved RoPE layout is not
// the trainer's.
std::unique_ptr<Model> load_model_to_train(const std::string& path, const std::string& command) {
  auto loaded = Model::load(path);
  if (loaded->config().rope_interleaved)
    throw Error(path + ": " + command + " needs a Hugging Face model directory (convert GGUF models first)");
  return loaded;
}

// ---- train ----

struct TrainCommand {
  TrainingFlags flags;
  std::string config_path, preset, tokenizer, init;
  int vocab = 0;
  double init_std = 0.02;
  const CLI::Option* init_std_option = nullptr;  // to tell a given --init-std from the default
};

void run_train(TrainCommand& o) {
  apply_common_flags(o.flags);
  std::unique_ptr<Model> loaded;  // --init: the weights to start from
  if (!o.init.empty()) {
    if (!o.config_path.empty() || !o.preset.empty() || o.vocab > 0 || o.init_std_option->count() > 0)
      throw Error("--init: the model (config and weights) comes from " + o.init +
                  "; give no --config, --preset, --vocab or --init-std with it");
  } else if (o.config_path.empty() == o.preset.empty()) {
    throw Error("give one of --config, --preset and --init");
  }
  auto tokenizer = load_tokenizer(o.tokenizer);
  ModelConfig config;
  std::string source;  // what the config came from, for errors
  if (!o.init.empty()) {
    loaded = load_model_to_train(o.init, "train --init");
    config = loaded->config();
    source = "--init " + o.init;
  } else if (!o.config_path.empty()) {
    config = load_hf_config(o.config_path);
    if (o.vocab > 0) config.vocab_size = o.vocab;
    source = o.config_path;
  } else {
    config = preset_config(o.preset, o.vocab > 0 ? o.vocab : tokenizer->vocab_size());
    source = "--preset " + o.preset;
  }
  if (config.vocab_size < tokenizer->vocab_size())
    throw Error((o.init.empty() ? "--vocab" : source) + ": the model's vocabulary (" +
                std::to_string(config.vocab_size) + ") is smaller than the tokenizer's (" +
                std::to_string(tokenizer->vocab_size()) + ")");
  config.bos_token_id = tokenizer->bos_id();
  config.eos_token_ids.assign(tokenizer->eos_ids().begin(), tokenizer->eos_ids().end());
  config.torch_dtype = "float32";
  validate_config(config, source);
  if (o.flags.options.seq_len > config.max_position_embeddings)
    throw Error("--seq-len: " + std::to_string(o.flags.options.seq_len) + " is above the model's context (" +
                std::to_string(config.max_position_embeddings) + " tokens, max_position_embeddings)");
  Data data = load_data(o.flags, *tokenizer);
  Transformer<float> model(config);
  if (loaded) {
    model.copy_from(*loaded);
    loaded.reset();
  } else {
    if (!(o.init_std > 0)) throw Error("--init-std: must be > 0, got " + std::to_string(o.init_std));
    model.init_random(o.flags.options.seed, o.init_std);
  }
  TrainOptions options = o.flags.options;
  options.tokenizer_path = o.tokenizer;
  options.precision = parse_matmul_precision(o.flags.precision);
  Trainer trainer(model, *data.source, data.task_list, options);
  if (!o.flags.resume.empty()) trainer.resume(o.flags.resume);
  std::fprintf(stderr, "train: %.2fM parameters, %lld steps of %lld x %lld tokens on %s%s\n",
               config.parameter_count() / 1e6, static_cast<long long>(options.steps),
               static_cast<long long>(options.batch * options.grad_accum), static_cast<long long>(options.seq_len),
               options.device.c_str(),
               trainer.start_step() > 0 ? (", resuming at step " + std::to_string(trainer.start_step())).c_str() : "");
  const double peak = o.flags.peak_tflops;
  trainer.run([peak](const StepReport& r) { print_step(r, peak); }, print_eval);
  std::fprintf(stderr, "wrote %s (log %s)\n", options.out_dir.c_str(), trainer.log_path().c_str());
}

// ---- adapt ----

struct AdaptCommand {
  TrainingFlags flags;
  std::string model_path, pod_config;
  int pod_group = 0;
  int sink = 16, recent = 256;
};

void run_adapt(AdaptCommand& o) {
  apply_common_flags(o.flags);
  auto loaded = load_model_to_train(o.model_path, "adapt");
  // A copy: `loaded` is freed below, before the training run reads the config.
  const ModelConfig config = loaded->config();
  PodConfig pod;
  if (!o.pod_config.empty()) pod = load_pod_config(o.pod_config, config.num_layers, config.num_kv_heads);
  else if (o.pod_group > 0) pod = uniform_pod_config(config.num_layers, config.num_kv_heads, o.pod_group, o.sink, o.recent);
  else throw Error("give --pod-config FILE or --pod-group G");
  auto tokenizer = load_model_tokenizer(*loaded);
  if (!tokenizer) throw Error(o.model_path + ": the model has no tokenizer (tokenizer.json or tokenizer.model)");
  if (o.flags.options.seq_len > config.max_position_embeddings)
    throw Error("--seq-len: " + std::to_string(o.flags.options.seq_len) + " is above the model's context (" +
                std::to_string(config.max_position_embeddings) + " tokens, max_position_embeddings)");
  Data data = load_data(o.flags, *tokenizer);
  Transformer<float> model(config);
  model.copy_from(*loaded);
  loaded.reset();
  TrainOptions options = o.flags.options;
  options.tokenizer_path = fs::is_directory(o.model_path) ? o.model_path : "";
  options.precision = parse_matmul_precision(o.flags.precision);
  Trainer trainer(model, *data.source, data.task_list, options);
  const double dense_loss = trainer.validation_loss();  // before PoD, on the training device
  model.set_pod(&pod);
  trainer.set_extra_state({{"adapt", {{"model", o.model_path}, {"dense_loss", dense_loss}}}});
  if (!o.flags.resume.empty()) trainer.resume(o.flags.resume);
  std::fprintf(stderr, "adapt: %s with PoD (%d blocks over %d layers x %d KV heads, sink %d, recent %d)\n",
               o.model_path.c_str(), PodLayout(pod, config.num_layers, config.num_kv_heads).total_blocks(),
               config.num_layers, config.num_kv_heads, pod.sink_tokens, pod.recent_tokens);
  double pod_before = NAN, pod_after = NAN;
  int64_t evals = 0;
  const double peak = o.flags.peak_tflops;
  trainer.run([peak](const StepReport& r) { print_step(r, peak); }, [&](const EvalReport& e) {
    print_eval(e);
    if (evals++ == 0) pod_before = e.loss;
    pod_after = e.loss;
  });
  std::printf("{\"dense_loss\": %.6f, \"pod_loss_before\": %.6f, \"pod_loss_after\": %.6f}\n", dense_loss, pod_before,
              pod_after);
  std::fprintf(stderr, "held-out loss: dense %.4f, PoD before adapt %.4f, PoD after adapt %.4f\nwrote %s\n", dense_loss,
               pod_before, pod_after, options.out_dir.c_str());
}

// ---- plot-loss ----

struct PlotCommand {
  std::vector<std::string> logs, labels;
  std::string out, title = "training loss";
  bool log_y = false;
};

// The train and eval losses of one JSONL log.
std::pair<plot::Series, plot::Series> read_losses(const std::string& log, const std::string& label) {
  std::ifstream in(log);
  if (!in) throw Error(log + ": cannot read the training log");
  plot::Series train{label + "train loss", {}, {}}, eval{label + "eval loss", {}, {}};
  std::string line;
  int64_t number = 0;
  while (read_line_bounded(in, line, kMaxJsonLineBytes, log, number)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw Error(log + ": line " + std::to_string(number) + " is not JSON");
    }
    if (!j.is_object() || !j.contains("step")) throw Error(log + ": line " + std::to_string(number) + " has no step");
    const double step = j["step"].get<double>();
    if (j.contains("loss")) train.x.push_back(step), train.y.push_back(j["loss"].get<double>());
    if (j.contains("eval_loss")) eval.x.push_back(step), eval.y.push_back(j["eval_loss"].get<double>());
  }
  if (train.x.empty() && eval.x.empty()) throw Error(log + ": no loss values");
  return {train, eval};
}

void run_plot(const PlotCommand& o) {
  if (!o.labels.empty() && o.labels.size() != o.logs.size())
    throw Error("--label: " + std::to_string(o.labels.size()) + " labels for " + std::to_string(o.logs.size()) +
                " logs (give one per log, or none)");
  plot::LineChart chart{o.title, "step", "loss", {}, o.log_y};
  size_t steps = 0, evals = 0;
  for (size_t i = 0; i < o.logs.size(); ++i) {
    // One log: "train loss", "eval loss"; several: each series named by its label (default: the file name).
    std::string label;
    if (o.logs.size() > 1) label = (o.labels.empty() ? fs::path(o.logs[i]).filename().string() : o.labels[i]) + ": ";
    auto [train, eval] = read_losses(o.logs[i], label);
    steps += train.x.size(), evals += eval.x.size();
    if (!train.x.empty()) chart.series.push_back(train);
    if (!eval.x.empty()) chart.series.push_back(eval);
  }
  plot::write_line_chart_png(o.out, chart);
  std::fprintf(stderr, "wrote %s (%zu logs, %zu steps, %zu evaluations)\n", o.out.c_str(), o.logs.size(), steps, evals);
}

}  // namespace

void add_train_commands(CLI::App& app) {
  {
    auto o = std::make_shared<TrainCommand>();
    CLI::App* cmd = app.add_subcommand(
        "train", "train a model from scratch or from given weights (float32 weights, on the CPU or a CUDA GPU)");
    cmd->add_option("--config", o->config_path, "config.json of the model to train");
    cmd->add_option("--preset", o->preset, "model shape: tiny, small, 100m or 1b");
    cmd->add_option("--init", o->init,
                    "start from the weights of this Hugging Face model directory (its config.json is the model; "
                    "instead of --config / --preset)");
    cmd->add_option("--tokenizer", o->tokenizer, "tokenizer.json / tokenizer.model / directory")->required();
    cmd->add_option("--vocab", o->vocab, "vocabulary size (default: the tokenizer's)");
    o->init_std_option =
        cmd->add_option("--init-std", o->init_std, "standard deviation of the initial weights")->capture_default_str();
    add_training_flags(cmd, o->flags);
    cmd->callback([o] { run_train(*o); });
  }
  {
    auto o = std::make_shared<AdaptCommand>();
    o->flags.options.lr = 1e-4;
    o->flags.options.steps = 200;
    CLI::App* cmd = app.add_subcommand("adapt", "fine-tune a model with PoD attention (post-training adaptation)");
    cmd->add_option("-m,--model", o->model_path, "model directory")->required();
    cmd->add_option("--pod-config", o->pod_config, "pod.json with the layer blocks and the window");
    cmd->add_option("--pod-group", o->pod_group, "uniform blocks of G layers instead of a pod.json");
    cmd->add_option("--sink", o->sink, "sink tokens for --pod-group")->capture_default_str();
    cmd->add_option("--recent", o->recent, "recent window for --pod-group")->capture_default_str();
    add_training_flags(cmd, o->flags);
    cmd->callback([o] { run_adapt(*o); });
  }
  {
    auto o = std::make_shared<PlotCommand>();
    CLI::App* cmd = app.add_subcommand("plot-loss", "draw training logs (JSONL) as loss curves in one PNG");
    cmd->add_option("logs", o->logs, "JSONL logs of podkv train / adapt (several: overlaid)")->required();
    cmd->add_option("--label", o->labels, "name of each log's curves (repeat, one per log; default the file name)");
    cmd->add_option("--out", o->out, "PNG to write")->required();
    cmd->add_option("--title", o->title, "chart title")->capture_default_str();
    cmd->add_flag("--log-y", o->log_y, "logarithmic loss axis");
    cmd->callback([o] { run_plot(*o); });
  }
}

}  // namespace podkv::cli
