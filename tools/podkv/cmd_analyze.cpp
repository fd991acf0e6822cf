// podkv analyze: inter-layer attention similarity on calibration text, and
// the PoD blocks it implies (pod.json), with the similarity matrices (JSON)
// and a heatmap (PNG). The work is in src/pod/analyze.h; this reads the text,
// shows progress and writes the files.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "backend/make_backend.h"
#include "commands.h"
#include "common.h"
#include "ops/matmul.h"
#include "plot/plot.h"
#include "pod/analyze.h"
#include "util/bounded_read.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace podkv::cli {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct AnalyzeCommand {
  std::string model;
  std::vector<std::string> calib;
  AnalyzeOptions analysis;
  int seq_len = 0;   // 0 = min(1024, the model's context)
  int recent = 0;    // 0 = min(256, T / 4)
  std::string scope = "distant";
  std::string out = "pod.json";
  std::string similarity_path;  // default: OUT's stem + .similarity.json
  std::string png_path;         // default: OUT's stem + .similarity.png
  bool no_png = false;
  std::string state_path;       // default: OUT's stem + .partial.json
  bool fresh = false;
  std::string kv_dtype;         // empty = the model's float type
  int stop_after = -1;
  int64_t context = 0;          // for the saving; 0 = the model's context
  int threads = 0;
  bool json_summary = false;
  std::string device = "cpu";       // where the dense model runs
  std::string cuda_weights = "bf16";
};

// OUT without a trailing .json, plus `suffix`.
std::string beside(const std::string& out, const std::string& suffix) {
  std::string stem = out;
  if (stem.size() > 5 && stem.ends_with(".json")) stem.resize(stem.size() - 5);
  return stem + suffix;
}

std::string read_calibration_file(const std::string& path) {
  check(fs::is_regular_file(path), "--calib: " + path + ": no such file");
  std::string text = read_file_bounded(path, kMaxTextBytes, "--calib");
  if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);  // UTF-8 byte order mark
  std::string lf;
  lf.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i)
    if (!(text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n')) lf += text[i];
  return lf;
}

// The calibration token sequences and a description of where they come from.
std::vector<std::vector<int32_t>> calibration(const AnalyzeCommand& o, const Model& model, std::string& source) {
  const AnalyzeOptions& a = o.analysis;
  auto tokenizer = load_model_tokenizer(model);
  std::vector<std::vector<int32_t>> sequences;
  if (o.calib.empty()) {
    if (tokenizer) {
      const std::string text = synthetic_calibration_text(static_cast<size_t>(a.samples) * a.seq_len * 8);
      sequences = cut_calibration_sequences(text, *tokenizer, a.samples, a.seq_len, "the built-in synthetic text");
      source = "the built-in synthetic text (no --calib given)";
    } else {
      sequences = synthetic_calibration_ids(model.config().vocab_size, a.samples, a.seq_len,
                                            model.config().bos_token_id);
      source = "built-in synthetic token ids (no --calib given; the model has no tokenizer)";
    }
    return sequences;
  }
  if (!tokenizer)
    throw Error("--calib: " + o.model + " has no tokenizer to read text with (omit --calib for synthetic ids)");
  std::string text, names;
  for (const std::string& path : o.calib) {
    text += read_calibration_file(path);
    text += "\n\n";
    names += (names.empty() ? "" : ", ") + fs::path(path).filename().string();
  }
  const std::string what = o.calib.size() == 1 ? o.calib[0] : std::to_string(o.calib.size()) + " --calib files";
  sequences = cut_calibration_sequences(text, *tokenizer, a.samples, a.seq_len, what);
  source = names;
  if (static_cast<int>(sequences.size()) < a.samples)
    std::fprintf(stderr, "note: %s: only %zu sequences of %d tokens fit (--samples %d)\n", what.c_str(),
                 sequences.size(), a.seq_len, a.samples);
  return sequences;
}

// A progress bar on a terminal; otherwise a line at most every 10 s.
class AnalyzeProgressBar {
 public:
  AnalyzeProgressBar() : tty_(isatty(fileno(stderr)) != 0) {}
  void update(const AnalyzeProgress& p) {
    const double fresh = p.done - p.resumed + p.running;  // sequences' worth of work this run
    const double left = fresh > 0 ? p.seconds / fresh * (p.total - p.done - p.running) : NAN;
    char eta[64] = "";
    if (std::isfinite(left)) std::snprintf(eta, sizeof(eta), ", ~%.0f s left", left);
    if (tty_) {
      const int width = 30;
      const int filled = p.total > 0 ? static_cast<int>(width * (p.done + p.running) / p.total) : 0;
      std::fprintf(stderr, "\ranalyze [%s%s] %d/%d sequences, %.0f s%s   ", std::string(filled, '#').c_str(),
                   std::string(width - filled, '.').c_str(), p.done, p.total, p.seconds, eta);
      shown_ = true;
    } else if (fresh > 0 && p.seconds - last_line_ >= 10.0) {
      std::fprintf(stderr, "analyze: %.1f/%d sequences, %.0f s%s\n", p.done + p.running, p.total, p.seconds, eta);
      last_line_ = p.seconds;
    }
    std::fflush(stderr);
  }
  void finish() {
    if (shown_) std::fprintf(stderr, "\n");
  }

 private:
  bool tty_;
  bool shown_ = false;
  double last_line_ = 0;
};

void write_text_file(const std::string& path, const std::string& text) {
  OutputFile out(path);
  out.write(text.data(), text.size());
  out.commit();
}

void run(AnalyzeCommand& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  AnalyzeOptions& a = o.analysis;
  a.scope = parse_scope(o.scope);
  auto model = Model::load(o.model);
  o.analysis.kv_dtype = kv_dtype_or_default(o.kv_dtype, model->weight_dtype());
  const ModelConfig& c = model->config();
  a.seq_len = o.seq_len > 0 ? o.seq_len : static_cast<int>(std::min<int64_t>(1024, c.max_position_embeddings));
  if (o.seq_len < 0) throw Error("--seq-len: must be positive (got " + std::to_string(o.seq_len) + ")");
  a.recent_tokens = o.recent != 0 ? o.recent : std::max(1, std::min(256, a.seq_len / 4));
  validate_analyze_options(a, c, o.model);
  const int64_t context = o.context > 0 ? o.context : c.max_position_embeddings;
  if (o.context < 0) throw Error("--context: must be positive");
  const std::string similarity_path = o.similarity_path.empty() ? beside(o.out, ".similarity.json") : o.similarity_path;
  std::string png_path = o.no_png ? "" : o.png_path.empty() ? beside(o.out, ".similarity.png") : o.png_path;
  const bool png_missing = !png_path.empty() && !plot::png_available();  // noted once the outputs are written
  if (png_missing && !o.png_path.empty())
    throw Error("--png " + o.png_path + ": PNG output needs Cairo: this podkv was built without it (install libcairo2-dev)");
  if (png_missing) png_path.clear();
  const std::string state_path = o.state_path.empty() ? beside(o.out, ".partial.json") : o.state_path;
  // Outputs are written after the model work: check their folders first.
  for (const auto& [option, path] : {std::pair<const char*, std::string>{"--out", o.out}, {"--similarity", similarity_path},
                                     {"--png", png_path}, {"--state", state_path}}) {
    if (path.empty()) continue;
    const std::filesystem::path folder = std::filesystem::path(path).parent_path();
    if (!folder.empty() && !std::filesystem::is_directory(folder))
      throw Error(std::string(option) + ": the folder of " + path + " does not exist");
  }
  if (o.stop_after < -1 || o.stop_after == 0) throw Error("--stop-after: must be at least 1");
  // Before the calibration text is read: a build without CUDA or no GPU is one line, at once.
  const std::unique_ptr<Backend> backend = make_backend(o.device, *model, o.cuda_weights);

  std::string source;
  const std::vector<std::vector<int32_t>> sequences = calibration(o, *model, source);
  if (!o.json_summary)
    std::printf("calibration: %zu sequences x %d tokens from %s\n", sequences.size(), a.seq_len, source.c_str());
  std::fflush(stdout);

  AnalyzeProgressBar bar;
  AnalyzeRunOptions run_options;
  run_options.state_path = state_path;
  run_options.discard_state = o.fresh;
  run_options.max_new_sequences = o.stop_after;
  run_options.progress = [&bar](const AnalyzeProgress& p) { bar.update(p); };
  run_options.backend = backend.get();
  const AnalyzeResult result = run_analysis(*model, a, sequences, run_options);
  bar.finish();
  if (!result.complete) {
    std::fprintf(stderr, "analyze: stopped after %d of %zu sequences (state in %s): rerun the same command to continue\n",
                 result.sequences, sequences.size(), state_path.c_str());
    return;
  }
  std::fprintf(stderr, "analyze: %d sequences (%d resumed) in %.1f s\n", result.sequences, result.resumed_sequences,
               result.seconds);

  save_pod_config(o.out, result.pod);
  json similarity = similarity_json(result, a);
  similarity["calibration"] = source;
  write_text_file(similarity_path, similarity.dump() + "\n");
  if (!png_path.empty()) write_similarity_png(png_path, result, a);
  if (png_missing) std::fprintf(stderr, "note: no heatmap: this podkv was built without Cairo (install libcairo2-dev)\n");
  std::error_code ignored;
  fs::remove(state_path, ignored);  // the outputs are written: the partial sums are no longer needed

  const double saving = pod_kv_saving(c, result.pod, context);
  const PodLayout layout(result.pod, c.num_layers, c.num_kv_heads);
  json blocks = json::array();
  for (int h = 0; h < c.num_kv_heads; ++h) blocks.push_back(layout.num_blocks(h));
  if (o.json_summary) {
    const json summary = {{"sequences", result.sequences},
                          {"resumed_sequences", result.resumed_sequences},
                          {"seconds", result.seconds},
                          {"calibration", source},
                          {"anchors", result.pod.anchors},
                          {"blocks_per_head", blocks},
                          {"average_block_length", layout.average_block_length()},
                          {"context", context},
                          {"kv_saving", saving},
                          {"pod_config", o.out},
                          {"similarity", similarity_path},
                          {"png", png_path}};
    std::printf("%s\n", summary.dump().c_str());
    return;
  }
  for (int h = 0; h < c.num_kv_heads; ++h) {
    const std::vector<int>& anchors = result.pod.anchors[h];
    std::string anchor_text, lengths;
    for (size_t b = 0; b < anchors.size(); ++b) {
      const int end = b + 1 < anchors.size() ? anchors[b + 1] : c.num_layers;
      anchor_text += (b ? " " : "") + std::to_string(anchors[b]);
      lengths += (b ? " " : "") + std::to_string(end - anchors[b]);
    }
    std::printf("KV head %d: %zu block%s, anchors %s (block lengths %s)\n", h, anchors.size(),
                anchors.size() == 1 ? "" : "s", anchor_text.c_str(), lengths.c_str());
  }
  std::printf("average block length %.2f layers (delta %.2f%s)\n", layout.average_block_length(), a.delta,
              a.max_block > 0 ? (", max block " + std::to_string(a.max_block)).c_str() : "");
  std::printf("expected KV saving at %lld tokens (sink %d, recent %d): %.1f%% of the dense cache\n",
              static_cast<long long>(context), a.sink_tokens, a.recent_tokens, 100.0 * saving);
  std::printf("wrote %s, %s%s%s\n", o.out.c_str(), similarity_path.c_str(), png_path.empty() ? "" : ", ",
              png_path.c_str());
}

}  // namespace

void add_analyze_command(CLI::App& app) {
  auto o = std::make_shared<AnalyzeCommand>();
  CLI::App* cmd = app.add_subcommand(
      "analyze", "measure inter-layer attention similarity on calibration text and write the PoD blocks (pod.json)");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file")->required();
  cmd->add_option("--calib", o->calib, "calibration text files (default: a built-in synthetic text)");
  cmd->add_option("--samples", o->analysis.samples, "calibration sequences N")->capture_default_str();
  cmd->add_option("--seq-len", o->seq_len, "tokens per sequence T (default: min(1024, the model's context))");
  cmd->add_option("--last-queries", o->analysis.last_queries, "observed queries q: the last q positions of each sequence")
      ->capture_default_str();
  cmd->add_option("--delta", o->analysis.delta, "a layer joins its block while its similarity to the anchor is >= delta")
      ->capture_default_str();
  cmd->add_option("--scope", o->scope, "compare the distant part of each distribution (renormalised) or all of it: distant, all")
      ->capture_default_str();
  cmd->add_option("--max-block", o->analysis.max_block, "longest block in layers (0 = no cap)")->capture_default_str();
  cmd->add_option("--sink", o->analysis.sink_tokens, "sink tokens ns (written to pod.json)")->capture_default_str();
  cmd->add_option("--recent", o->recent, "recent-window tokens nr (written to pod.json; default: min(256, T/4))");
  cmd->add_option("--out", o->out, "the pod.json to write")->capture_default_str();
  cmd->add_option("--similarity", o->similarity_path, "similarity matrices JSON (default: OUT's stem + .similarity.json)");
  cmd->add_option("--png", o->png_path, "heatmap image (default: OUT's stem + .similarity.png)");
  cmd->add_flag("--no-png", o->no_png, "do not draw the heatmap");
  cmd->add_option("--context", o->context, "context length for the expected KV saving (default: the model's)");
  cmd->add_option("--state", o->state_path, "partial-run state file (default: OUT's stem + .partial.json)");
  cmd->add_flag("--fresh", o->fresh, "discard a partial run's state and start over");
  cmd->add_option("--stop-after", o->stop_after, "run at most this many new sequences now, keep the state, and stop");
  cmd->add_option("--chunk", o->analysis.chunk, "prefill chunk length")->capture_default_str();
  cmd->add_option("--kv-dtype", o->kv_dtype, "KV entry type the keys are read back from: f32, f16, bf16, q8_0 (default: the model's float type)");
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  cmd->add_option("--device", o->device, "where the dense model runs: cpu or cuda")->capture_default_str();
  cmd->add_option("--cuda-weights", o->cuda_weights, "weight matrices on the GPU: bf16 or f32")->capture_default_str();
  cmd->add_flag("--json", o->json_summary, "print the summary as one JSON object");
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
