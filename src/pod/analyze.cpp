#include "pod/analyze.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "kv/kv_cache.h"
#include "kv/kv_layout.h"
#include "policy/policies.h"
#include "engine/runner.h"
#include "plot/plot.h"
#include "tokenizer/tokenizer.h"
#include "util/bounded_read.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace podkv {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kStateFormat = "podkv-analyze-state";

// FNV-1a, 64 bit: a fingerprint of tokens and weights (not cryptographic).
struct Fnv1a {
  uint64_t hash = 1469598103934665603ull;
  void add(const void* data, size_t bytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
  }
  std::string hex() const {
    char text[17];
    std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(hash));
    return text;
  }
};

// The first bytes of every layer's matrices and of the embedding: enough to
// tell two checkpoints of the same shape apart without reading all weights.
std::string weights_fingerprint(const Model& model) {
  Fnv1a f;
  auto add = [&](const WeightMatrix& w) { f.add(w.data, std::min<size_t>(w.bytes(), 4096)); };
  add(model.embedding());
  for (const LayerWeights& layer : model.layers()) {
    add(layer.wq);
    add(layer.wk);
    add(layer.wo);
    add(layer.w_down);
  }
  return f.hex();
}

std::string to_text(const json& value) { return value.is_string() ? value.get<std::string>() : value.dump(); }

}  // namespace

const char* scope_name(SimilarityScope scope) {
  return scope == SimilarityScope::Distant ? "distant" : "all";
}

SimilarityScope parse_scope(const std::string& name) {
  if (name == "distant") return SimilarityScope::Distant;
  if (name == "all") return SimilarityScope::All;
  throw Error("--scope: '" + name + "' is not one of distant, all");
}

void validate_analyze_options(const AnalyzeOptions& o, const ModelConfig& c, const std::string& model_name) {
  check(c.num_layers >= 2, model_name + ": " + std::to_string(c.num_layers) +
                               " attention layer(s): grouping layers into PoD blocks needs at least 2");
  check(c.num_heads >= 1 && c.num_kv_heads >= 1 && c.num_heads % c.num_kv_heads == 0 && c.head_dim >= 1,
        model_name + ": " + std::to_string(c.num_heads) + " query heads over " + std::to_string(c.num_kv_heads) +
            " KV heads is not a grouped-query attention podkv supports");
  check(o.samples >= 1, "--samples: must be at least 1 (got " + std::to_string(o.samples) + ")");
  check(o.last_queries >= 1, "--last-queries: must be at least 1 (got " + std::to_string(o.last_queries) + ")");
  check(o.sink_tokens >= 0, "--sink: must be >= 0 (got " + std::to_string(o.sink_tokens) + ")");
  check(o.recent_tokens >= 1, "--recent: must be >= 1 (got " + std::to_string(o.recent_tokens) + ")");
  check(o.seq_len >= 1, "--seq-len: must be positive (got " + std::to_string(o.seq_len) + ")");
  check(o.seq_len <= c.max_position_embeddings,
        "--seq-len " + std::to_string(o.seq_len) + " is longer than the model's context (max_position_embeddings " +
            std::to_string(c.max_position_embeddings) + ")");
  if (o.scope == SimilarityScope::Distant) {
    const int64_t need = static_cast<int64_t>(o.sink_tokens) + o.recent_tokens + o.last_queries;
    check(o.seq_len >= need, "--seq-len " + std::to_string(o.seq_len) + " is shorter than --sink " +
                                 std::to_string(o.sink_tokens) + " + --recent " + std::to_string(o.recent_tokens) +
                                 " + --last-queries " + std::to_string(o.last_queries) + " = " +
                                 std::to_string(need) + ": the observed queries would have no distant tokens");
  } else {
    check(o.seq_len >= o.last_queries, "--seq-len " + std::to_string(o.seq_len) + " is shorter than --last-queries " +
                                           std::to_string(o.last_queries));
  }
  check(o.delta >= 0.0 && o.delta <= 1.0, "--delta: must be in [0, 1] (got " + std::to_string(o.delta) + ")");
  check(o.max_block >= 0, "--max-block: must be >= 0 (got " + std::to_string(o.max_block) + ")");
  check(o.chunk >= 1, "--chunk: must be positive");
}

// ------------------------------------------------------------ calibration data

std::vector<std::vector<int32_t>> cut_calibration_sequences(const std::string& text, const Tokenizer& tokenizer,
                                                            int samples, int seq_len,
                                                            const std::string& source_name) {
  check(samples >= 1 && seq_len >= 1, "cut_calibration_sequences: samples and seq_len must be positive");
  const std::vector<int32_t> bos = tokenizer.encode("", true);
  check(static_cast<int>(bos.size()) < seq_len, "--seq-len " + std::to_string(seq_len) + " leaves no room for text");
  const size_t body = static_cast<size_t>(seq_len) - bos.size();  // text tokens per sequence
  std::vector<std::vector<int32_t>> out;
  auto add = [&](const int32_t* ids) {
    std::vector<int32_t> seq = bos;
    seq.insert(seq.end(), ids, ids + body);
    out.push_back(std::move(seq));
  };

  // Tokens take a few bytes each; a text of fewer than 32 bytes per needed
  // token is tokenized whole, a longer one only where it is sampled.
  const size_t region = text.size() / static_cast<size_t>(samples);
  if (region < 32 * body) {
    const std::vector<int32_t> ids = tokenizer.encode(text, false);
    const size_t windows = std::min(static_cast<size_t>(samples), ids.size() / body);
    check(windows >= 1, source_name + ": " + std::to_string(ids.size()) +
                            " tokens of calibration text, fewer than one sequence of --seq-len " +
                            std::to_string(seq_len) + " needs (" + std::to_string(body) + " after BOS)");
    const size_t stride = windows > 1 ? (ids.size() - body) / (windows - 1) : 0;  // >= body
    for (size_t w = 0; w < windows; ++w) add(ids.data() + w * stride);
    return out;
  }
  for (int i = 0; i < samples; ++i) {
    size_t begin = static_cast<size_t>(i) * region;
    if (i > 0) {  // start at a line start
      const size_t newline = text.find('\n', begin);
      if (newline == std::string::npos || newline + 1 >= (static_cast<size_t>(i) + 1) * region) continue;
      begin = newline + 1;
    }
    for (size_t piece = 8 * body;; piece *= 2) {
      size_t end = std::min(text.size(), begin + piece);
      if (end < text.size()) {  // end at a space or line end, not inside a word or character
        const size_t space = text.find_last_of(" \n", end);
        if (space != std::string::npos && space > begin) end = space;
      }
      const std::vector<int32_t> ids = tokenizer.encode(std::string_view(text).substr(begin, end - begin), false);
      if (ids.size() >= body) {
        add(ids.data());
        break;
      }
      if (begin + piece >= text.size()) break;
    }
  }
  check(!out.empty(), source_name + ": no part of the calibration text holds " + std::to_string(body) +
                          " tokens for a sequence of --seq-len " + std::to_string(seq_len));
  return out;
}

std::string synthetic_calibration_text(size_t min_bytes) {
  static const char* const kNames[] = {"Ada", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Grace", "Hugo",
                                       "Ines", "Jonas", "Keiko", "Luis", "Maya", "Nils", "Olga", "Pavel"};
  static const char* const kVerbs[] = {"found", "carried", "painted", "lost", "repaired", "sold", "hid",
                                       "borrowed", "measured", "described", "opened", "wrapped"};
  static const char* const kThings[] = {"a brass lantern", "the old map", "a green umbrella", "the violin",
                                        "a box of letters", "the clock", "a silver key", "the blue notebook",
                                        "a wooden boat", "the telescope", "a jar of honey", "the red bicycle"};
  static const char* const kPlaces[] = {"in the harbour", "near the station", "at the market", "in the attic",
                                        "behind the library", "on the hill", "by the river", "in the garden",
                                        "at the bakery", "under the bridge"};
  static const char* const kLinks[] = {"Later that day,", "Meanwhile,", "The next morning,", "Because of this,",
                                       "Years before,", "Without a word,"};
  std::mt19937 rng(20241203);
  auto pick = [&](auto& list) { return list[rng() % std::size(list)]; };
  std::string text;
  std::vector<std::string> sentences;  // earlier sentences, some of which recur
  while (text.size() < min_bytes) {
    std::string paragraph;
    const int count = 4 + static_cast<int>(rng() % 5);
    for (int s = 0; s < count; ++s) {
      std::string sentence;
      if (!sentences.empty() && rng() % 6 == 0) {
        sentence = "As noted before, " + sentences[rng() % sentences.size()];  // a distant repeat
      } else {
        const std::string who = pick(kNames), what = pick(kThings);
        sentence = std::string(s > 0 && rng() % 3 == 0 ? std::string(pick(kLinks)) + " " : "") + who + " " +
                   pick(kVerbs) + " " + what + " " + pick(kPlaces) + ", and " + pick(kNames) + " asked why " +
                   who + " needed " + what + ".";
        if (sentences.size() < 400) sentences.push_back(sentence);
      }
      paragraph += (s > 0 ? " " : "") + sentence;
    }
    text += paragraph + "\n\n";
  }
  return text;
}

std::vector<std::vector<int32_t>> synthetic_calibration_ids(int vocab_size, int samples, int seq_len, int32_t bos) {
  check(vocab_size >= 2 && samples >= 1 && seq_len >= 2, "synthetic_calibration_ids: bad sizes");
  std::mt19937 rng(20241203);
  std::vector<std::vector<int32_t>> out(samples);
  for (auto& seq : out) {
    if (bos >= 0) seq.push_back(bos);
    while (static_cast<int>(seq.size()) < seq_len) {
      if (seq.size() > 64 && rng() % 8 == 0) {  // repeat an earlier span (8..31 tokens)
        const size_t len = 8 + rng() % 24, from = rng() % (seq.size() - len);
        for (size_t k = 0; k < len && static_cast<int>(seq.size()) < seq_len; ++k) seq.push_back(seq[from + k]);
      } else {
        seq.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab_size)));
      }
    }
  }
  return out;
}

// ------------------------------------------------------------ the analysis

LayerSimilarityAnalysis::LayerSimilarityAnalysis(const Model& model, const AnalyzeOptions& options, Backend* backend)
    : model_(model),
      options_(options),
      accumulator_((validate_analyze_options(options, model.config(), model.path()), model.config().num_layers),
                   model.config().num_heads, model.config().num_kv_heads, options.scope, options.sink_tokens,
                   options.recent_tokens) {
  const ModelConfig& c = model.config();
  const KvLayout layout = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
  const int64_t chunk = std::max<int64_t>(options.chunk, options.last_queries);
  KvCache probe(layout, 0, 16, options.kv_dtype);  // sizes only
  const int64_t pages = probe.peak_pages(0, options.seq_len, chunk);
  cache_ = std::make_unique<KvCache>(layout, static_cast<size_t>(pages) * probe.page_bytes(), 16, options.kv_dtype);
  if (backend != nullptr) {
    check(&backend->model() == &model, "analyze: the " + backend->name() + " backend runs another model than " +
                                           model.path());
    runner_ = std::make_unique<Runner>(*backend, *cache_);
  } else {
    runner_ = std::make_unique<Runner>(model, *cache_);
  }
  runner_->set_chunk_size(chunk);
  runner_->set_layer_observer([this](const LayerObservation& o) { observe(o); });
  probs_.assign(static_cast<size_t>(c.num_heads) * options.last_queries * options.seq_len, 0.0f);
}

LayerSimilarityAnalysis::~LayerSimilarityAnalysis() {
  // A caller's backend outlives the analysis: it must not keep calling into it.
  runner_->set_layer_observer(nullptr);
}

void LayerSimilarityAnalysis::add_sequence(const std::vector<int32_t>& tokens) {
  const int T = options_.seq_len, Q = options_.last_queries;
  check(static_cast<int>(tokens.size()) == T, "calibration sequence of " + std::to_string(tokens.size()) +
                                                  " tokens; --seq-len is " + std::to_string(T));
  const int vocab = model_.config().vocab_size;
  for (size_t p = 0; p < tokens.size(); ++p)
    check(tokens[p] >= 0 && tokens[p] < vocab, "calibration token id " + std::to_string(tokens[p]) +
                                                   " at position " + std::to_string(p) +
                                                   " is outside the model's vocabulary (" + std::to_string(vocab) + ")");
  seq_ = cache_->add_sequence();
  try {
    accumulator_.begin_sequence(T, Q);
    std::vector<float> logits;
    // The observed queries go in one chunk of their own, so each layer's
    // attention rows are complete in one observer call.
    if (T > Q) runner_->forward(seq_, std::vector<int32_t>(tokens.begin(), tokens.end() - Q), false, logits);
    runner_->forward(seq_, std::vector<int32_t>(tokens.end() - Q, tokens.end()), false, logits);
    accumulator_.end_sequence();
  } catch (...) {
    cache_->remove_sequence(seq_);
    seq_ = -1;
    throw;
  }
  cache_->remove_sequence(seq_);
  seq_ = -1;
}

void LayerSimilarityAnalysis::observe(const LayerObservation& o) {
  const int layer = o.layer;
  const float* q = o.q;
  const int64_t first_pos = o.first_pos, tokens = o.tokens;
  const int T = options_.seq_len, Q = options_.last_queries;
  if (step_) {
    const int L = model_.config().num_layers;
    step_((static_cast<double>(first_pos) + static_cast<double>(tokens) * (layer + 1) / L) / T);
  }
  if (first_pos + tokens <= T - Q) return;  // before the observed queries
  check(first_pos == T - Q && tokens == Q, "analyze: the observed queries were split over chunks");
  const ModelConfig& c = model_.config();
  const int H = c.num_heads, d = c.head_dim, group = c.num_heads / c.num_kv_heads;
  const float scale = static_cast<float>(attention_score_scale(c));
  // The layer's keys [KV head][position][d] as float32 (the cache may store f16/bf16/q8_0).
  std::vector<float> keys(static_cast<size_t>(c.num_kv_heads) * T * d);
  for (int h = 0; h < c.num_kv_heads; ++h) {
    const StreamView view = stream_view(*o.view, o.entry, kKeys, layer, h);
    for (int j = 0; j < T; ++j)
      kv_decode(o.view->dtype, view.at(j), d, &keys[(static_cast<size_t>(h) * T + j) * d]);
  }
#pragma omp parallel for schedule(dynamic)
  for (int job = 0; job < H * Q; ++job) {  // job = query head * Q + slot: the row of [H][q][T]
    const int i = job / Q, s = job % Q, t = T - Q + s;
    const float* query = q + (static_cast<size_t>(s) * H + i) * d;
    const float* head_keys = &keys[static_cast<size_t>(i / group) * T * d];
    float* row = probs_.data() + static_cast<size_t>(job) * T;
    float max_score = -std::numeric_limits<float>::infinity();
    for (int j = 0; j <= t; ++j) {
      const float* key = head_keys + static_cast<size_t>(j) * d;
      float dot = 0.0f;
      for (int x = 0; x < d; ++x) dot += query[x] * key[x];
      row[j] = dot * scale;
      max_score = std::max(max_score, row[j]);
    }
    double total = 0.0;
    for (int j = 0; j <= t; ++j) total += (row[j] = std::exp(row[j] - max_score));
    const float inv = static_cast<float>(1.0 / total);
    for (int j = 0; j <= t; ++j) row[j] *= inv;
    std::fill(row + t + 1, row + T, 0.0f);
  }
  if (hook_) hook_(layer, probs_.data());
  accumulator_.feed_layer(layer, probs_.data(), static_cast<size_t>(T));
}

// ------------------------------------------------------------ resumable runs

json analyze_settings(const Model& model, const AnalyzeOptions& o, const std::vector<std::vector<int32_t>>& sequences) {
  const ModelConfig& c = model.config();
  Fnv1a tokens;
  for (const auto& seq : sequences) {
    const uint64_t n = seq.size();
    tokens.add(&n, sizeof(n));
    tokens.add(seq.data(), seq.size() * sizeof(int32_t));
  }
  return json{{"num_layers", c.num_layers},
              {"num_heads", c.num_heads},
              {"num_kv_heads", c.num_kv_heads},
              {"head_dim", c.head_dim},
              {"weights_fingerprint", weights_fingerprint(model)},
              {"samples", static_cast<int>(sequences.size())},
              {"seq_len", o.seq_len},
              {"last_queries", o.last_queries},
              {"sink_tokens", o.sink_tokens},
              {"recent_tokens", o.recent_tokens},
              {"scope", scope_name(o.scope)},
              {"calibration_fingerprint", tokens.hex()}};
}

namespace {

void write_state(const std::string& path, const json& settings, const SimilarityAccumulator& accumulator) {
  const SimilarityAccumulator::Totals totals = accumulator.totals();
  const json state = {{"format", kStateFormat},
                      {"settings", settings},
                      {"sequences_done", totals.sequences},
                      {"sums", totals.sums},
                      {"counts", totals.counts}};
  const std::string text = state.dump() + "\n";
  OutputFile out(path);
  out.write(text.data(), text.size());
  out.commit();
}

// Restores the sums of a partial run; returns its sequence count.
int read_state(const std::string& path, const json& settings, SimilarityAccumulator& accumulator) {
  // The state holds L × L similarity sums per KV head.
  const std::string text = read_file_bounded(path, kMaxTextBytes);
  json state;
  try {
    state = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path + ": not a readable analysis state (" + e.what() + "): delete it or pass --fresh");
  }
  check(state.is_object() && state.value("format", "") == kStateFormat && state.contains("settings") &&
            state.contains("sums") && state.contains("counts") && state.contains("sequences_done"),
        path + ": not a podkv analyze state file: delete it or pass --fresh");
  const json& saved = state["settings"];
  for (auto it = settings.begin(); it != settings.end(); ++it)
    if (!saved.contains(it.key()) || saved[it.key()] != it.value())
      throw Error(path + ": a partial analysis made with " + it.key() + " = " +
                  (saved.contains(it.key()) ? to_text(saved[it.key()]) : "(none)") + ", this run has " +
                  to_text(it.value()) + ": rerun with the same settings and calibration text, or pass --fresh to start over");
  SimilarityAccumulator::Totals totals;
  try {
    totals.sequences = state["sequences_done"].get<int>();
    totals.sums = state["sums"].get<std::vector<double>>();
    totals.counts = state["counts"].get<std::vector<int64_t>>();
  } catch (const json::exception& e) {
    throw Error(path + ": malformed analysis state (" + e.what() + ")");
  }
  check(totals.sequences >= 0 && totals.sequences <= settings["samples"].get<int>(),
        path + ": sequences_done " + std::to_string(totals.sequences) + " is out of range");
  try {
    accumulator.restore_totals(totals);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  return totals.sequences;
}

}  // namespace

AnalyzeResult run_analysis(const Model& model, const AnalyzeOptions& options,
                           const std::vector<std::vector<int32_t>>& sequences, const AnalyzeRunOptions& run) {
  validate_analyze_options(options, model.config(), model.path());
  check(!sequences.empty(), "analyze: no calibration sequences");
  for (size_t k = 0; k < sequences.size(); ++k)
    check(static_cast<int>(sequences[k].size()) == options.seq_len,
          "analyze: calibration sequence " + std::to_string(k) + " has " + std::to_string(sequences[k].size()) +
              " tokens; --seq-len is " + std::to_string(options.seq_len));
  LayerSimilarityAnalysis analysis(model, options, run.backend);
  AnalyzeResult result;
  result.settings = analyze_settings(model, options, sequences);
  const int total = static_cast<int>(sequences.size());
  int done = 0;
  if (!run.state_path.empty() && fs::exists(run.state_path)) {
    if (run.discard_state)
      fs::remove(run.state_path);
    else
      done = read_state(run.state_path, result.settings, analysis.accumulator());
  }
  result.resumed_sequences = done;
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  double last_report = 0;
  auto report = [&](double running) {
    if (!run.progress) return;
    last_report = seconds();
    run.progress({.done = done,
                  .running = running,
                  .total = total,
                  .resumed = result.resumed_sequences,
                  .seconds = last_report});
  };
  analysis.set_step_callback([&](double fraction) {
    if (fraction < 1.0 && seconds() - last_report >= 0.25) report(fraction);
  });
  report(0.0);
  for (int fresh = 0; done < total; ++fresh) {
    if (run.max_new_sequences >= 0 && fresh >= run.max_new_sequences) break;
    analysis.add_sequence(sequences[done]);
    ++done;
    if (!run.state_path.empty()) write_state(run.state_path, result.settings, analysis.accumulator());
    report(0.0);
  }
  result.sequences = done;
  result.seconds = seconds();
  result.complete = done == total;
  if (!result.complete) return result;

  result.similarity = analysis.accumulator().mean_similarity();
  result.pod.sink_tokens = options.sink_tokens;
  result.pod.recent_tokens = options.recent_tokens;
  result.pod.anchors = greedy_anchors_per_head(result.similarity, options.delta, options.max_block);
  json analysis_settings = result.settings;
  analysis_settings["delta"] = options.delta;
  analysis_settings["max_block"] = options.max_block;
  result.pod.extra["analysis"] = analysis_settings;
  return result;
}

// ------------------------------------------------------------ outputs

json similarity_json(const AnalyzeResult& result, const AnalyzeOptions& options) {
  json j = result.settings;
  j["delta"] = options.delta;
  j["max_block"] = options.max_block;
  j["anchors"] = result.pod.anchors;
  j["similarity"] = result.similarity;
  return j;
}

void write_similarity_png(const std::string& path, const AnalyzeResult& result, const AnalyzeOptions& options) {
  check(!result.similarity.empty(), path + ": no similarity to draw (the analysis is not complete)");
  std::vector<plot::Heatmap> panels;
  for (size_t h = 0; h < result.similarity.size(); ++h) {
    plot::Heatmap panel;
    const auto& matrix = result.similarity[h];
    std::string anchors;
    for (int a : result.pod.anchors[h]) anchors += (anchors.empty() ? "" : " ") + std::to_string(a);
    panel.title = "KV head " + std::to_string(h) + " (anchors " + anchors + ")";
    panel.x_label = "layer";
    panel.y_label = "layer";
    for (size_t l = 0; l < matrix.size(); ++l) {
      panel.x_ticks.push_back(std::to_string(l));
      panel.y_ticks.push_back(std::to_string(l));
    }
    panel.values = matrix;
    panel.vmin = 0.0;
    panel.vmax = 1.0;
    panel.annotate = matrix.size() <= 12;
    panels.push_back(std::move(panel));
  }
  char title[256];
  std::snprintf(title, sizeof(title), "Layer similarity, 1 - JS over %s tokens (%d x %d tokens, last %d queries)",
                scope_name(options.scope), result.sequences, options.seq_len, options.last_queries);
  plot::write_heatmaps_png(path, panels, title, std::min<int>(4, static_cast<int>(panels.size())));
}

double pod_kv_saving(const ModelConfig& config, const PodConfig& pod, int64_t context) {
  const KvLayout layout = pod_kv_layout(config, pod);
  const KvLayout dense = KvLayout::dense(config.num_layers, config.num_kv_heads, config.head_dim);
  return 1.0 - static_cast<double>(layout.retained_vectors(context)) /
                   static_cast<double>(dense.retained_vectors(context));
}

}  // namespace podkv
