// Offline layer grouping (docs/pod-method.md, "Offline layer grouping"):
// the similarity of the attention of two layers is 1 - JS (Jensen-Shannon
// divergence, log base 2), averaged per KV head over its query heads, the last
// q query positions and the calibration sequences; blocks are then cut
// greedily from layer 0 upwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace podkv {

// JS(p || q) = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2, log base 2,
// so it lies in [0, 1]: 0 for identical, 1 for disjoint supports. p and q are
// assumed normalised (n entries each); 0 * log 0 = 0. Accumulates in double and
// clamps rounding to [0, 1].
double js_divergence_log2(const double* p, const double* q, size_t n);
double js_divergence_log2(const float* p, const float* q, size_t n);

// Anchors of one KV head from its similarity matrix [L][L] (only
// similarity[anchor][l] for anchor < l is read): layer 0 starts a block; layer l
// joins the current block while similarity[anchor][l] >= delta and the block
// stays within max_block layers (0 = no cap); otherwise l starts a new block.
std::vector<int> greedy_anchors(const std::vector<std::vector<double>>& similarity, double delta,
                                int max_block);

// greedy_anchors for every KV head of a [kv_head][L][L] similarity: the
// `anchors` field of a PodConfig.
std::vector<std::vector<int>> greedy_anchors_per_head(
    const std::vector<std::vector<std::vector<double>>>& similarity, double delta, int max_block);

// Which keys a query's distribution is compared over.
enum class SimilarityScope {
  Distant,  // only distant keys (ns <= j <= t - nr), renormalised: the keys PoD shares (default)
  All,      // every causal key 0..t
};

// Accumulates the mean layer-pair similarity per KV head over calibration
// sequences, fed one layer at a time as the dense model runs.
//
// Per sequence: begin_sequence(T, q); then for every layer, query head and
// each of the last q query positions t = T-q .. T-1, feed that query's
// attention distribution (feed or feed_layer); then end_sequence(), which
// adds 1 - JS(A_x, A_y) for every pair of layers x < y, every query head of
// the KV head and every observed query.
//
// Memory: the restricted, renormalised distributions of the current sequence
// are kept for every layer, as floats: L * H_q * sum_t len(t) <= L * H_q * q * T
// floats (e.g. L=32, H_q=32, q=32, T=4096: 512 MiB), plus L * H_q * q
// entropies; the running sums are H_kv * L * L doubles and counts.
// Compute in end_sequence: H_q * q * L(L-1)/2 passes over len(t) values
// (OpenMP over layer pairs when built with it).
//
// A query is left out of the pairs of a layer (not counted) when its scope
// is empty (t < ns + nr: no distant keys) or that layer puts no mass on it.
class SimilarityAccumulator {
 public:
  // Query head i belongs to KV head i / (num_query_heads / num_kv_heads).
  // sink_tokens / recent_tokens define the distant scope (ignored for All).
  SimilarityAccumulator(int num_layers, int num_query_heads, int num_kv_heads,
                        SimilarityScope scope, int sink_tokens, int recent_tokens);

  // Starts a sequence of seq_len tokens whose last num_queries positions are
  // observed. Discards a sequence begun but not ended.
  void begin_sequence(int seq_len, int num_queries);

  // The attention of `query_head` at `query_position` (one of the last q) in
  // `layer`: probs[0..num_keys) over key positions 0.., with num_keys >
  // query_position; keys after query_position are causally masked and ignored.
  // Entries must be finite and >= 0. Each (layer, head, query) is fed once.
  void feed(int layer, int query_head, int query_position, const float* probs, size_t num_keys);

  // Every query head and observed query of `layer` at once: probs is
  // [num_query_heads][num_queries][row_stride] (row_stride >= seq_len), row s
  // holding query position seq_len - num_queries + s.
  void feed_layer(int layer, const float* probs, size_t row_stride);

  // Adds the pair similarities of the current sequence; every (layer, query
  // head, query) must have been fed. Frees nothing (buffers are reused).
  void end_sequence();

  // [kv_head][L][L], symmetric, diagonal 1: the mean of 1 - JS over all
  // samples of each pair. Throws Error when a pair has no sample.
  std::vector<std::vector<std::vector<double>>> mean_similarity() const;

  // How many (sequence, query head, query) samples pair (x, y) of kv_head has.
  int64_t samples(int kv_head, int layer_x, int layer_y) const;
  int sequences() const { return sequences_; }

  // The running sums over ended sequences, to save a partial analysis and
  // resume it later with the same result (sums and counts: [kv_head][L][L],
  // only x < y used).
  struct Totals {
    int sequences = 0;
    std::vector<double> sums;
    std::vector<int64_t> counts;
  };
  Totals totals() const { return {sequences_, similarity_sums_, sample_counts_}; }
  // Replaces the running sums with saved ones (throws Error when their sizes
  // do not fit this accumulator); a sequence in progress is discarded.
  void restore_totals(const Totals& totals);
  // Floats held for the current sequence's distributions (see Memory above).
  size_t stored_floats() const { return distributions_.size(); }

 private:
  enum class Slot : uint8_t { Empty, Valid, NoMass };

  size_t slot_index(int layer, int query_head, int slot) const;
  size_t pair_index(int kv_head, int x, int y) const;

  int num_layers_;
  int num_query_heads_;
  int num_kv_heads_;
  SimilarityScope scope_;
  int sink_tokens_;
  int recent_tokens_;

  // Current sequence.
  int seq_len_ = 0;
  int num_queries_ = 0;
  bool in_sequence_ = false;
  std::vector<int> scope_begin_;      // [slot] first key of the scope
  std::vector<int> scope_len_;        // [slot] keys in the scope (0 = none)
  std::vector<size_t> slot_offset_;   // [slot] offset within one (layer, head) section
  size_t floats_per_head_ = 0;        // sum over slots of scope_len_
  std::vector<float> distributions_;  // [layer][query_head][slot][scope_len] renormalised
  std::vector<double> entropies_;     // [layer][query_head][slot] entropy in bits
  std::vector<Slot> states_;          // [layer][query_head][slot]

  // Over all sequences, for x < y only.
  std::vector<double> similarity_sums_;  // [kv_head][L][L]
  std::vector<int64_t> sample_counts_;   // [kv_head][L][L]
  int sequences_ = 0;
};

}  // namespace podkv
