// Offline layer grouping from real attention (podkv analyze; pod-method.md,
// "Offline layer grouping"): the dense model runs over N calibration
// sequences of T tokens; after each layer's attention the softmax of the last
// q queries against that layer's keys is computed and fed to a
// SimilarityAccumulator; layers are then grouped per KV head greedily.
//
// Memory: besides the model and a dense KV cache of T tokens, one layer's
// attention rows [H][q][T] floats at a time, and the accumulator's restricted
// copies (at most L * H * q * T floats): q·T per layer, never L·T².
//
// A run is resumable: after each sequence the running sums go to a state file
// (written through a temporary name and renamed), and a rerun with the same
// settings and calibration tokens continues from there.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "kv/pod_config.h"
#include "model/model.h"
#include "pod/grouping.h"

namespace podkv {

class Tokenizer;
class KvCache;
class Runner;

struct AnalyzeOptions {
  int samples = 8;          // N: calibration sequences
  int seq_len = 1024;       // T: tokens per sequence
  int last_queries = 32;    // q: observed query positions T-q .. T-1
  int sink_tokens = 16;     // ns (also written to pod.json)
  int recent_tokens = 256;  // nr (also written to pod.json)
  SimilarityScope scope = SimilarityScope::Distant;
  double delta = 0.5;       // layer l joins its block while similarity(anchor, l) >= delta
  int max_block = 0;        // longest block in layers (0 = no cap)
  int64_t chunk = 256;      // prefill chunk (activation memory)
  KvDType kv_dtype = KvDType::F32;  // entry type of the cache the keys are read back from
};

// "distant" / "all"; parse throws Error naming --scope for anything else.
const char* scope_name(SimilarityScope scope);
SimilarityScope parse_scope(const std::string& name);

// Checks the options against the model; throws Error naming the option at
// fault (e.g. "--seq-len 300 is shorter than --sink 16 + --recent 256 +
// --last-queries 32") or the model (fewer than 2 layers: nothing to group).
void validate_analyze_options(const AnalyzeOptions& options, const ModelConfig& config,
                              const std::string& model_name);

// Up to `samples` sequences of `seq_len` tokens from `text`, each starting
// with BOS when the tokenizer adds one, spread evenly over the text (short
// texts are tokenized whole and cut into non-overlapping windows; long ones
// are sampled at `samples` evenly spaced line starts). Fewer sequences when the
// text is short; throws Error naming `source_name` when not even one fits.
std::vector<std::vector<int32_t>> cut_calibration_sequences(const std::string& text,
                                                            const Tokenizer& tokenizer, int samples,
                                                            int seq_len,
                                                            const std::string& source_name);

// A deterministic built-in English-like text of at least `min_bytes` bytes
// (recurring names and phrases, so that attention has distant tokens to find),
// used when no calibration files are given.
std::string synthetic_calibration_text(size_t min_bytes);

// Deterministic token ids for a model without a tokenizer: random ids in
// [0, vocab) with recurring spans; BOS first when bos >= 0.
std::vector<std::vector<int32_t>> synthetic_calibration_ids(int vocab_size, int samples, int seq_len,
                                                            int32_t bos);

// Runs the dense model over calibration sequences and accumulates the layer
// similarities.
class LayerSimilarityAnalysis {
 public:
  // Validates the options (see validate_analyze_options). The dense model runs on `backend` (which
  // must run `model` and outlive the analysis; its layer observer is the analysis's until then), or
  // on the CPU when null.
  LayerSimilarityAnalysis(const Model& model, const AnalyzeOptions& options, Backend* backend = nullptr);
  ~LayerSimilarityAnalysis();

  // Runs `tokens` (exactly seq_len ids) and adds its attention to the sums.
  void add_sequence(const std::vector<int32_t>& tokens);

  // Called with each layer's attention rows while add_sequence runs:
  // probs [num_heads][last_queries][seq_len], row s = query T - q + s, zero
  // after the query (causal). For tests and inspection.
  using AttentionHook = std::function<void(int layer, const float* probs)>;
  void set_attention_hook(AttentionHook hook) { hook_ = std::move(hook); }
  // Called after every layer of every prefill chunk with the fraction of the
  // current sequence's work done, in (0, 1]: progress within long sequences.
  void set_step_callback(std::function<void(double fraction)> callback) { step_ = std::move(callback); }

  SimilarityAccumulator& accumulator() { return accumulator_; }
  const SimilarityAccumulator& accumulator() const { return accumulator_; }
  const AnalyzeOptions& options() const { return options_; }

 private:
  void observe(const LayerObservation& observation);

  const Model& model_;
  AnalyzeOptions options_;
  SimilarityAccumulator accumulator_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Runner> runner_;
  int seq_ = -1;                // the cache sequence being run
  std::vector<float> probs_;    // [H][q][T] one layer's attention rows
  AttentionHook hook_;
  std::function<void(double)> step_;
};

struct AnalyzeProgress {
  int done = 0;            // sequences in the sums (resumed ones included)
  double running = 0;      // fraction of the next sequence done, in [0, 1)
  int total = 0;           // sequences of the whole analysis
  int resumed = 0;         // taken from the state file
  double seconds = 0;      // this run so far
};
using AnalyzeProgressFn = std::function<void(const AnalyzeProgress&)>;

struct AnalyzeResult {
  bool complete = false;        // every sequence is in (false: stopped by max_new_sequences)
  int sequences = 0;            // in the sums
  int resumed_sequences = 0;    // of them, taken from the state file
  double seconds = 0;           // this run
  nlohmann::json settings;      // see analyze_settings
  std::vector<std::vector<std::vector<double>>> similarity;  // [kv_head][L][L], when complete
  PodConfig pod;                                            // when complete
};

// The settings a state file must share to be resumed, and that travel with
// the results: model shape and a fingerprint of its weights, N, T, q, ns, nr,
// scope, and a fingerprint of the calibration tokens.
nlohmann::json analyze_settings(const Model& model, const AnalyzeOptions& options,
                                const std::vector<std::vector<int32_t>>& sequences);

struct AnalyzeRunOptions {
  std::string state_path;        // empty: no state file
  bool discard_state = false;    // start over even when a state file exists
  int max_new_sequences = -1;    // stop (keeping the state) after this many new ones; -1 = all
  AnalyzeProgressFn progress;    // at the start, after each sequence, and within one at most every 0.25 s
  Backend* backend = nullptr;    // where the dense model runs (make_backend); null = the CPU
};

// Runs the analysis over `sequences` (their count is N), resuming from the
// state file when it holds a partial run with the same settings (throws Error
// naming the file and the first differing setting otherwise, unless
// discard_state). The state file is written after each sequence and removed
// when the analysis completes. The result's pod config has the analysis
// settings, delta and max_block under extra["analysis"].
AnalyzeResult run_analysis(const Model& model, const AnalyzeOptions& options,
                           const std::vector<std::vector<int32_t>>& sequences,
                           const AnalyzeRunOptions& run);

// {"similarity": [kv_head][L][L], "anchors": ..., "delta", "max_block", settings...}
nlohmann::json similarity_json(const AnalyzeResult& result, const AnalyzeOptions& options);

// A grid of heatmaps, one per KV head (layers x layers, colour 0..1, anchors
// in each panel's title). Throws Error when PNG output is not available.
void write_similarity_png(const std::string& path, const AnalyzeResult& result,
                          const AnalyzeOptions& options);

// KV bytes saved by `pod` against dense for one sequence of `context` tokens
// (1 - PoD vectors / dense vectors; analytic, as podkv info computes it).
double pod_kv_saving(const ModelConfig& config, const PodConfig& pod, int64_t context);

}  // namespace podkv
