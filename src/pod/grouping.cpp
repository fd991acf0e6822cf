#include "pod/grouping.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "util/error.h"

namespace podkv {

namespace {

// One side of KL(p || m) in bits: p * log2(p / m); 0 when p is 0 (m >= p/2 > 0 otherwise).
inline double kl_term(double p, double m) { return p > 0.0 ? p * std::log2(p / m) : 0.0; }

template <typename T>
double js_divergence_impl(const T* p, const T* q, size_t n) {
  // Both KL sides summed per element, so swapping p and q gives bit-identical results.
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double pi = p[i], qi = q[i];
    const double m = 0.5 * (pi + qi);
    total += kl_term(pi, m) + kl_term(qi, m);
  }
  return std::clamp(0.5 * total, 0.0, 1.0);
}

// Shannon entropy in bits of n values (0 * log 0 = 0).
double entropy_bits(const float* p, size_t n) {
  double h = 0.0;
  for (size_t i = 0; i < n; ++i)
    if (p[i] > 0.0f) h -= static_cast<double>(p[i]) * std::log2(static_cast<double>(p[i]));
  return h;
}

// JS = H(m) - (H(p) + H(q)) / 2: one log per key instead of two, given the
// entropies of p and q computed once at feed time.
double js_from_entropies(const float* p, const float* q, size_t n, double entropy_p,
                         double entropy_q) {
  double entropy_m = 0.0;
  for (size_t i = 0; i < n; ++i) {
    double m = 0.5 * (static_cast<double>(p[i]) + static_cast<double>(q[i]));
    if (m > 0.0) entropy_m -= m * std::log2(m);
  }
  return std::clamp(entropy_m - 0.5 * (entropy_p + entropy_q), 0.0, 1.0);
}

}  // namespace

double js_divergence_log2(const double* p, const double* q, size_t n) {
  return js_divergence_impl(p, q, n);
}

double js_divergence_log2(const float* p, const float* q, size_t n) {
  return js_divergence_impl(p, q, n);
}

std::vector<int> greedy_anchors(const std::vector<std::vector<double>>& similarity, double delta,
                                int max_block) {
  const size_t num_layers = similarity.size();
  check(num_layers >= 1, "greedy_anchors: the similarity matrix is empty");
  for (size_t x = 0; x < num_layers; ++x)
    check(similarity[x].size() == num_layers,
          "greedy_anchors: similarity row " + std::to_string(x) + " has " +
              std::to_string(similarity[x].size()) + " entries, expected " +
              std::to_string(num_layers));
  check(!std::isnan(delta), "greedy_anchors: delta is NaN");
  check(max_block >= 0,
        "greedy_anchors: max_block must be >= 0 (got " + std::to_string(max_block) + ")");

  std::vector<int> anchors = {0};
  for (size_t l = 1; l < num_layers; ++l) {
    const int anchor = anchors.back();
    const bool within_cap = max_block == 0 || static_cast<int>(l) - anchor + 1 <= max_block;
    if (!(within_cap && similarity[anchor][l] >= delta)) anchors.push_back(static_cast<int>(l));
  }
  return anchors;
}

std::vector<std::vector<int>> greedy_anchors_per_head(
    const std::vector<std::vector<std::vector<double>>>& similarity, double delta, int max_block) {
  std::vector<std::vector<int>> anchors;
  anchors.reserve(similarity.size());
  for (const auto& matrix : similarity) anchors.push_back(greedy_anchors(matrix, delta, max_block));
  return anchors;
}

SimilarityAccumulator::SimilarityAccumulator(int num_layers, int num_query_heads, int num_kv_heads,
                                             SimilarityScope scope, int sink_tokens,
                                             int recent_tokens)
    : num_layers_(num_layers),
      num_query_heads_(num_query_heads),
      num_kv_heads_(num_kv_heads),
      scope_(scope),
      sink_tokens_(sink_tokens),
      recent_tokens_(recent_tokens) {
  const std::string who = "SimilarityAccumulator: ";
  check(num_layers >= 1, who + "num_layers must be >= 1 (got " + std::to_string(num_layers) + ")");
  check(num_kv_heads >= 1,
        who + "num_kv_heads must be >= 1 (got " + std::to_string(num_kv_heads) + ")");
  check(num_query_heads >= num_kv_heads && num_query_heads % num_kv_heads == 0,
        who + "num_query_heads (" + std::to_string(num_query_heads) +
            ") must be a multiple of num_kv_heads (" + std::to_string(num_kv_heads) + ")");
  check(sink_tokens >= 0,
        who + "sink_tokens must be >= 0 (got " + std::to_string(sink_tokens) + ")");
  check(recent_tokens >= 1,
        who + "recent_tokens must be >= 1 (got " + std::to_string(recent_tokens) + ")");
  const size_t cells = static_cast<size_t>(num_kv_heads) * num_layers * num_layers;
  similarity_sums_.assign(cells, 0.0);
  sample_counts_.assign(cells, 0);
}

void SimilarityAccumulator::begin_sequence(int seq_len, int num_queries) {
  check(seq_len >= 1,
        "SimilarityAccumulator: seq_len must be >= 1 (got " + std::to_string(seq_len) + ")");
  check(num_queries >= 1 && num_queries <= seq_len,
        "SimilarityAccumulator: num_queries must be in [1, seq_len = " + std::to_string(seq_len) +
            "] (got " + std::to_string(num_queries) + ")");
  seq_len_ = seq_len;
  num_queries_ = num_queries;
  scope_begin_.assign(num_queries, 0);
  scope_len_.assign(num_queries, 0);
  slot_offset_.assign(num_queries, 0);
  floats_per_head_ = 0;
  for (int s = 0; s < num_queries; ++s) {
    const int t = seq_len - num_queries + s;
    if (scope_ == SimilarityScope::All) {
      scope_len_[s] = t + 1;
    } else {
      // distant: ns <= j <= t - nr (may be empty)
      scope_begin_[s] = sink_tokens_;
      scope_len_[s] = std::max(0, t - recent_tokens_ - sink_tokens_ + 1);
    }
    slot_offset_[s] = floats_per_head_;
    floats_per_head_ += scope_len_[s];
  }
  const size_t sections = static_cast<size_t>(num_layers_) * num_query_heads_;
  distributions_.assign(sections * floats_per_head_, 0.0f);
  entropies_.assign(sections * num_queries, 0.0);
  states_.assign(sections * num_queries, Slot::Empty);
  in_sequence_ = true;
}

size_t SimilarityAccumulator::slot_index(int layer, int query_head, int slot) const {
  return (static_cast<size_t>(layer) * num_query_heads_ + query_head) * num_queries_ + slot;
}

size_t SimilarityAccumulator::pair_index(int kv_head, int x, int y) const {
  return (static_cast<size_t>(kv_head) * num_layers_ + x) * num_layers_ + y;
}

void SimilarityAccumulator::feed(int layer, int query_head, int query_position, const float* probs,
                                 size_t num_keys) {
  const std::string where = "SimilarityAccumulator: layer " + std::to_string(layer) +
                            ", query head " + std::to_string(query_head) + ", query position " +
                            std::to_string(query_position);
  check(in_sequence_, where + ": feed outside begin_sequence/end_sequence");
  check(layer >= 0 && layer < num_layers_,
        where + ": layer out of range (" + std::to_string(num_layers_) + " layers)");
  check(query_head >= 0 && query_head < num_query_heads_,
        where + ": query head out of range (" + std::to_string(num_query_heads_) + " heads)");
  const int slot = query_position - (seq_len_ - num_queries_);
  check(slot >= 0 && slot < num_queries_,
        where + ": not one of the last " + std::to_string(num_queries_) +
            " positions of a sequence of " + std::to_string(seq_len_));
  check(probs != nullptr, where + ": probs is null");
  check(num_keys > static_cast<size_t>(query_position), where + ": " + std::to_string(num_keys) +
                                                            " keys, need at least " +
                                                            std::to_string(query_position + 1));
  const size_t index = slot_index(layer, query_head, slot);
  check(states_[index] == Slot::Empty, where + ": fed twice");

  const int begin = scope_begin_[slot];
  const int len = scope_len_[slot];
  double mass = 0.0;
  for (int j = begin; j < begin + len; ++j) {
    const float p = probs[j];
    if (!(std::isfinite(p) && p >= 0.0f))
      throw Error(where + ": probability " + std::to_string(p) + " at key " + std::to_string(j));
    mass += p;
  }
  if (len == 0 || !(mass > 0.0)) {
    states_[index] = Slot::NoMass;
    return;
  }
  float* out = distributions_.data() +
               (static_cast<size_t>(layer) * num_query_heads_ + query_head) * floats_per_head_ +
               slot_offset_[slot];
  for (int j = 0; j < len; ++j) out[j] = static_cast<float>(probs[begin + j] / mass);
  entropies_[index] = entropy_bits(out, len);
  states_[index] = Slot::Valid;
}

void SimilarityAccumulator::feed_layer(int layer, const float* probs, size_t row_stride) {
  check(in_sequence_, "SimilarityAccumulator: feed_layer outside begin_sequence/end_sequence");
  check(row_stride >= static_cast<size_t>(seq_len_),
        "SimilarityAccumulator: feed_layer row_stride " + std::to_string(row_stride) +
            " < seq_len " + std::to_string(seq_len_));
  check(probs != nullptr, "SimilarityAccumulator: feed_layer probs is null");
  for (int i = 0; i < num_query_heads_; ++i)
    for (int s = 0; s < num_queries_; ++s)
      feed(layer, i, seq_len_ - num_queries_ + s,
           probs + (static_cast<size_t>(i) * num_queries_ + s) * row_stride, row_stride);
}

void SimilarityAccumulator::end_sequence() {
  check(in_sequence_, "SimilarityAccumulator: end_sequence without begin_sequence");
  for (int l = 0; l < num_layers_; ++l)
    for (int i = 0; i < num_query_heads_; ++i)
      for (int s = 0; s < num_queries_; ++s)
        if (states_[slot_index(l, i, s)] == Slot::Empty)
          throw Error("SimilarityAccumulator: end_sequence: layer " + std::to_string(l) +
                      ", query head " + std::to_string(i) + ", query position " +
                      std::to_string(seq_len_ - num_queries_ + s) + " was not fed");

  const int group = num_query_heads_ / num_kv_heads_;
  const int pairs_per_head = num_layers_ * (num_layers_ - 1) / 2;
  const int64_t total = static_cast<int64_t>(num_kv_heads_) * pairs_per_head;
  // Each iteration owns one (kv_head, x, y) cell, so no two threads write the same sum.
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic)
#endif
  for (int64_t job = 0; job < total; ++job) {
    const int h = static_cast<int>(job / pairs_per_head);
    int rest = static_cast<int>(job % pairs_per_head);
    int x = 0;
    // job -> (x, y): row x of the upper triangle holds L - 1 - x pairs.
    while (rest >= num_layers_ - 1 - x) {
      rest -= num_layers_ - 1 - x;
      ++x;
    }
    const int y = x + 1 + rest;
    double sum = 0.0;
    int64_t count = 0;
    for (int i = h * group; i < (h + 1) * group; ++i) {
      const float* base_x = distributions_.data() +
                            (static_cast<size_t>(x) * num_query_heads_ + i) * floats_per_head_;
      const float* base_y = distributions_.data() +
                            (static_cast<size_t>(y) * num_query_heads_ + i) * floats_per_head_;
      for (int s = 0; s < num_queries_; ++s) {
        const size_t ix = slot_index(x, i, s), iy = slot_index(y, i, s);
        if (states_[ix] != Slot::Valid || states_[iy] != Slot::Valid) continue;
        sum += 1.0 - js_from_entropies(base_x + slot_offset_[s], base_y + slot_offset_[s],
                                       scope_len_[s], entropies_[ix], entropies_[iy]);
        ++count;
      }
    }
    similarity_sums_[pair_index(h, x, y)] += sum;
    sample_counts_[pair_index(h, x, y)] += count;
  }
  ++sequences_;
  in_sequence_ = false;
}

std::vector<std::vector<std::vector<double>>> SimilarityAccumulator::mean_similarity() const {
  std::vector<std::vector<std::vector<double>>> mean(
      num_kv_heads_,
      std::vector<std::vector<double>>(num_layers_, std::vector<double>(num_layers_, 1.0)));
  for (int h = 0; h < num_kv_heads_; ++h)
    for (int x = 0; x < num_layers_; ++x)
      for (int y = x + 1; y < num_layers_; ++y) {
        const int64_t count = sample_counts_[pair_index(h, x, y)];
        check(count > 0, "SimilarityAccumulator: no samples for KV head " + std::to_string(h) +
                             ", layers " + std::to_string(x) + " and " + std::to_string(y) + " (" +
                             std::to_string(sequences_) +
                             " sequences; queries need t >= sink + recent to have distant keys)");
        mean[h][x][y] = mean[h][y][x] = similarity_sums_[pair_index(h, x, y)] / count;
      }
  return mean;
}

void SimilarityAccumulator::restore_totals(const Totals& totals) {
  const size_t cells = static_cast<size_t>(num_kv_heads_) * num_layers_ * num_layers_;
  check(totals.sums.size() == cells && totals.counts.size() == cells,
        "SimilarityAccumulator: restore_totals: " + std::to_string(totals.sums.size()) + " sums and " +
            std::to_string(totals.counts.size()) + " counts, expected " + std::to_string(cells) +
            " each (kv_heads x layers x layers)");
  check(totals.sequences >= 0, "SimilarityAccumulator: restore_totals: negative sequence count");
  for (size_t i = 0; i < cells; ++i)
    check(totals.counts[i] >= 0 && std::isfinite(totals.sums[i]) && totals.sums[i] >= 0 &&
              totals.sums[i] <= static_cast<double>(totals.counts[i]) * (1 + 1e-9) + 1e-9,
          "SimilarityAccumulator: restore_totals: entry " + std::to_string(i) +
              " is not a sum of similarities in [0, 1] over its count");
  similarity_sums_ = totals.sums;
  sample_counts_ = totals.counts;
  sequences_ = totals.sequences;
  in_sequence_ = false;
}

int64_t SimilarityAccumulator::samples(int kv_head, int layer_x, int layer_y) const {
  check(kv_head >= 0 && kv_head < num_kv_heads_ && layer_x >= 0 && layer_x < num_layers_ &&
            layer_y >= 0 && layer_y < num_layers_,
        "SimilarityAccumulator: samples(" + std::to_string(kv_head) + ", " +
            std::to_string(layer_x) + ", " + std::to_string(layer_y) + ") out of range");
  if (layer_x == layer_y) return 0;
  return sample_counts_[pair_index(kv_head, std::min(layer_x, layer_y),
                                   std::max(layer_x, layer_y))];
}

}  // namespace podkv
