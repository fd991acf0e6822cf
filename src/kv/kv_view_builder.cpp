#include "kv/kv_view_builder.h"

#include <atomic>

#include "kv/token_classes.h"

namespace podkv {

static_assert(static_cast<int>(Retention::Full) == kRetainFull && static_cast<int>(Retention::Window) == kRetainWindow &&
                  static_cast<int>(Retention::None) == kRetainNone &&
                  static_cast<int>(Retention::Selected) == kRetainSelected,
              "token_classes.h retention codes follow kv_layout.h");

const KvView& KvViewBuilder::build(const KvCache& cache, uint8_t* pool_base, const std::vector<int>& seqs,
                                   const std::vector<int64_t>& new_lengths) {
  check(seqs.size() == new_lengths.size(), "kv view: one new length per sequence");
  const KvLayout& layout = cache.layout();
  const int L = layout.num_layers, H = layout.num_kv_heads, G = layout.num_selection_groups;
  const int B = static_cast<int>(seqs.size());
  key_rules_.resize(static_cast<size_t>(L) * H);
  value_rules_.resize(key_rules_.size());
  for (size_t i = 0; i < key_rules_.size(); ++i) {
    const StreamRule& k = layout.keys[i];
    const StreamRule& v = layout.values[i];
    const int head = static_cast<int>(i % H);
    key_rules_[i] = KvRule{static_cast<int32_t>(k.retention), k.distant_source, k.proximal_source,
                           layout.distant_group(k, layout.keys, head)};
    value_rules_[i] = KvRule{static_cast<int32_t>(v.retention), v.distant_source, v.proximal_source,
                             layout.distant_group(v, layout.values, head)};
  }
  new_length_ = new_lengths;
  window_base_.resize(B);
  store_size_.resize(static_cast<size_t>(B) * G);
  score_indptr_.assign(1, 0);
  // The entries before the first whose tables changed (or that is new) keep their copies, at the
  // same places: in a batch whose sequences cross pages at different steps, a step copies the
  // tables from that entry on, not all of them. (A version names one state of one sequence of one
  // cache, so equal versions also mean the same layout.)
  const size_t streams_per_entry = static_cast<size_t>(4) * L * H;
  int kept = 0;
  while (kept < B && static_cast<size_t>(kept) < copied_versions_.size() &&
         cache.tables_version(seqs[kept]) == copied_versions_[kept])
    ++kept;
  if (kept < B || copied_versions_.size() != seqs.size()) {
    // Unique in the process, so that views of different builders never share a generation.
    static std::atomic<uint64_t> next_generation{1};
    tables_base_generation_ = kept > 0 ? tables_generation_ : 0;
    tables_same_streams_ = static_cast<int64_t>(kept) * static_cast<int64_t>(streams_per_entry);
    tables_generation_ = next_generation.fetch_add(1, std::memory_order_relaxed);
    page_indptr_.resize(static_cast<size_t>(tables_same_streams_) + 1);
    page_indices_.resize(static_cast<size_t>(page_indptr_.back()));
    copied_versions_.resize(B);
    for (int b = kept; b < B; ++b) {
      const int seq = seqs[b];
      copied_versions_[b] = cache.tables_version(seq);
      for (int kind = 0; kind < 4; ++kind) {
        for (int l = 0; l < L; ++l) {
          for (int h = 0; h < H; ++h) {
            const std::vector<int32_t>& table = cache.page_table(seq, kind, l, h);
            page_indices_.insert(page_indices_.end(), table.begin(), table.end());
            page_indptr_.push_back(static_cast<int64_t>(page_indices_.size()));
          }
        }
      }
    }
  }
  for (int b = 0; b < B; ++b) {
    const int seq = seqs[b];
    window_base_[b] = cache.window_base(seq);
    for (int g = 0; g < G; ++g) {
      store_size_[static_cast<size_t>(b) * G + g] = cache.store_size(seq, g);
      score_indptr_.push_back(score_indptr_.back() + cache.score_region_size(seq, g));
    }
  }
  view_ = KvView{};
  view_.dtype = cache.dtype();
  view_.pool = pool_base;
  view_.page_tokens = cache.page_tokens();
  view_.entry_bytes = static_cast<int64_t>(cache.entry_bytes());
  view_.page_bytes = static_cast<int64_t>(cache.page_bytes());
  view_.num_layers = L;
  view_.num_kv_heads = H;
  view_.head_dim = layout.head_dim;
  view_.sink_tokens = layout.sink_tokens;
  view_.recent_tokens = layout.recent_tokens;
  view_.key_rules = key_rules_.data();
  view_.value_rules = value_rules_.data();
  view_.num_groups = G;
  view_.num_seqs = B;
  view_.new_length = new_length_.data();
  view_.window_base = window_base_.data();
  view_.page_indptr = page_indptr_.data();
  view_.page_indices = page_indices_.data();
  view_.tables_generation = tables_generation_;
  view_.tables_base_generation = tables_base_generation_;
  view_.tables_same_streams = tables_same_streams_;
  view_.store_size = store_size_.data();
  view_.score_indptr = score_indptr_.data();
  return view_;
}

void KvViewBuilder::apply_scores(KvCache& cache, const std::vector<int>& seqs, const float* scores) const {
  const int G = view_.num_groups;
  for (size_t b = 0; b < seqs.size(); ++b)
    for (int g = 0; g < G; ++g) cache.add_scores(seqs[b], g, scores + score_indptr_[b * G + g]);
}

}  // namespace podkv
