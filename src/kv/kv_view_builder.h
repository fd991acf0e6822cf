// Builds the plain per-step KvView (kv_view.h) from the host bookkeeping, and
// hands the selection scores attention wrote back to it.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/kv_cache.h"
#include "kv/kv_view.h"

namespace podkv {

class KvViewBuilder {
 public:
  // The view of batch entries `seqs` (each reserved up to `new_lengths`) over
  // the pool at `pool_base`. Valid until the next build or any change to the cache.
  const KvView& build(const KvCache& cache, uint8_t* pool_base, const std::vector<int>& seqs,
                      const std::vector<int64_t>& new_lengths);
  const KvView& view() const { return view_; }
  // Floats of the score output of the last build (0 without token selection).
  int64_t score_count() const { return score_indptr_.empty() ? 0 : score_indptr_.back(); }
  // Adds the score output of a step (score_count() floats) to the cache's groups.
  void apply_scores(KvCache& cache, const std::vector<int>& seqs, const float* scores) const;

 private:
  KvView view_;
  std::vector<KvRule> key_rules_, value_rules_;
  std::vector<int64_t> new_length_, window_base_, page_indptr_, store_size_, score_indptr_;
  std::vector<int32_t> page_indices_;
  // The tables_version() of each batch entry when page_indptr_ / page_indices_ were copied. A
  // version names one state of one sequence's tables in the process (any cache), so a step whose
  // entries have the same versions (most decode steps) keeps them: copying every stream's table is
  // most of a batched step's host time (64 sequences of 8K tokens: 4.2M entries).
  std::vector<uint64_t> copied_versions_;
  uint64_t tables_generation_ = 0;  // KvView::tables_generation of page_indptr_ / page_indices_
  uint64_t tables_base_generation_ = 0;  // KvView::tables_base_generation
  int64_t tables_same_streams_ = 0;      // KvView::tables_same_streams
};

}  // namespace podkv
