// Token selection in the KV cache (H2O, SnapKV, PoD + SnapKV): the compact
// stores of Selected streams, which tokens move into them, and which are
// dropped. See kv_layout.h for the rules and kv_cache.h for the storage.
#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>

#include "kv/kv_cache.h"
#include "util/int_math.h"

namespace podkv {

std::vector<int32_t>& KvCache::store_table(Sequence& s, const Member& m) {
  return m.key ? s.key_store_pages[m.stream] : s.value_store_pages[m.stream];
}

std::pair<int32_t, int32_t> KvCache::store_location(Sequence& s, const Member& m, int64_t slot) {
  const std::vector<int32_t>& table = store_table(s, m);
  // Reserved by reserve(): a missing page here is a bug in the accounting, not bad input.
  check(slot / page_tokens_ < static_cast<int64_t>(table.size()), "kv cache: selection store slot not reserved");
  return {table[slot / page_tokens_], static_cast<int32_t>(slot % page_tokens_)};
}

// Hands the moves gathered by one commit or end_prefill to the pool, before
// any page they read can be handed out again.
void KvCache::run_copies() {
  if (pool_ != nullptr && !copies_.empty()) pool_->copy_entries(copies_.data(), copies_.size());
  copies_.clear();
}

// Tokens [s.window_base, new_base) have left the recent window: copy them
// from each Selected stream's window into its store, with the scores they
// gathered; H2O then cuts each group back to its budget.
void KvCache::move_to_stores(Sequence& s, int64_t new_base) {
  const int64_t old_base = s.window_base;
  const int heads = layout_.num_kv_heads;
  for (size_t g = 0; g < group_members_.size(); ++g) {
    Group& group = s.groups[g];
    for (int64_t pos = old_base; pos < new_base; ++pos) {
      const int64_t slot_index = static_cast<int64_t>(group.positions.size());
      group.positions.push_back(static_cast<int32_t>(pos));
      const size_t offset = static_cast<size_t>(pos - old_base);
      group.scores.push_back(offset < group.window_scores.size() ? group.window_scores[offset] : 0.0f);
      for (const Member& m : group_members_[g]) {
        auto& window = m.key ? s.key_pages[m.stream] : s.value_pages[m.stream];
        const auto from = location(window, pos, m.key ? "keys" : "values", m.stream / heads, m.stream % heads);
        const auto to = store_location(s, m, slot_index);
        copies_.push_back(EntryCopy{from.first, from.second, to.first, to.second});
      }
    }
    const size_t moved = std::min(group.window_scores.size(), static_cast<size_t>(new_base - old_base));
    group.window_scores.erase(group.window_scores.begin(), group.window_scores.begin() + static_cast<int64_t>(moved));
    const int64_t over = static_cast<int64_t>(group.positions.size()) - layout_.budget;
    if (layout_.selection == Selection::HeavyHitters && over > 0) {
      // H2O: drop the `over` tokens with the least accumulated attention
      // (ties: the older token goes first).
      std::vector<int32_t> slots(group.positions.size());
      std::iota(slots.begin(), slots.end(), 0);
      auto lower = [&](int32_t a, int32_t b) {
        if (group.scores[a] != group.scores[b]) return group.scores[a] < group.scores[b];
        return group.positions[a] < group.positions[b];
      };
      std::nth_element(slots.begin(), slots.begin() + (over - 1), slots.end(), lower);
      slots.resize(static_cast<size_t>(over));
      drop_slots(s, static_cast<int>(g), std::move(slots));
    }
  }
}

// Removes `slots` from a group's stores by moving the last slot into each hole
// (highest first, so a moved slot is never one still to be dropped).
void KvCache::drop_slots(Sequence& s, int g, std::vector<int32_t> slots) {
  Group& group = s.groups[g];
  std::sort(slots.begin(), slots.end(), std::greater<>());
  slots.erase(std::unique(slots.begin(), slots.end()), slots.end());
  for (int32_t slot : slots) {
    const int32_t last = static_cast<int32_t>(group.positions.size()) - 1;
    if (slot != last) {
      group.positions[slot] = group.positions[last];
      group.scores[slot] = group.scores[last];
      for (const Member& m : group_members_[g]) {
        const auto from = store_location(s, m, last);
        const auto to = store_location(s, m, slot);
        copies_.push_back(EntryCopy{from.first, from.second, to.first, to.second});
      }
    }
    group.positions.pop_back();
    group.scores.pop_back();
  }
}

// Gives back store pages beyond what the kept tokens need.
bool KvCache::trim_stores(Sequence& s) {
  bool trimmed = false;
  for (size_t g = 0; g < group_members_.size(); ++g) {
    const int64_t need = ceil_div(static_cast<int64_t>(s.groups[g].positions.size()), page_tokens_);
    for (const Member& m : group_members_[g]) {
      auto& table = store_table(s, m);
      while (static_cast<int64_t>(table.size()) > need) {
        free_pages_.push_back(table.back());
        table.pop_back();
        trimmed = true;
      }
    }
  }
  return trimmed;
}

void KvCache::end_prefill(int seq) {
  Sequence& s = sequence(seq);
  if (layout_.selection != Selection::SnapKV || s.prefill_length >= 0) return;
  s.prefill_length = s.length;
  const int64_t half = layout_.pool_kernel / 2;
  for (size_t g = 0; g < group_members_.size(); ++g) {
    Group& group = s.groups[g];
    const int64_t n = static_cast<int64_t>(group.positions.size());
    if (n <= layout_.budget) continue;
    // Nothing was dropped before the prefill ended, so slot order is position
    // order and neighbouring slots are neighbouring positions: max-pool there.
    std::vector<float> pooled(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const auto first = group.scores.begin() + std::max<int64_t>(0, i - half);
      const auto last = group.scores.begin() + std::min(n, i + half + 1);
      pooled[i] = *std::max_element(first, last);
    }
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    // Highest pooled score first; ties keep the later (more recent) token.
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      if (pooled[a] != pooled[b]) return pooled[a] > pooled[b];
      return a > b;
    });
    order.erase(order.begin(), order.begin() + layout_.budget);
    drop_slots(s, static_cast<int>(g), std::move(order));
  }
  run_copies();
  if (trim_stores(s)) tables_changed(s);
}

bool KvCache::prefill_done(int seq) const {
  return layout_.selection != Selection::SnapKV || sequence(seq).prefill_length >= 0;
}

void KvCache::add_scores(int seq, int group, const float* region) {
  Sequence& s = sequence(seq);
  check(group >= 0 && group < static_cast<int>(s.groups.size()), "kv cache: no selection group " + std::to_string(group));
  Group& g = s.groups[group];
  for (size_t i = 0; i < g.scores.size(); ++i) g.scores[i] += region[i];
  region += g.scores.size();
  for (size_t i = 0; i < g.window_scores.size(); ++i) g.window_scores[i] += region[i];
}

int64_t KvCache::store_size(int seq, int group) const {
  const Sequence& s = sequence(seq);
  check(group >= 0 && group < static_cast<int>(s.groups.size()), "kv cache: no selection group " + std::to_string(group));
  return static_cast<int64_t>(s.groups[group].positions.size());
}

const std::vector<float>& KvCache::window_scores(int seq, int group) const {
  const Sequence& s = sequence(seq);
  check(group >= 0 && group < static_cast<int>(s.groups.size()), "kv cache: no selection group " + std::to_string(group));
  return s.groups[group].window_scores;
}

int64_t KvCache::score_region_size(int seq, int group) const {
  const Sequence& s = sequence(seq);
  check(group >= 0 && group < static_cast<int>(s.groups.size()), "kv cache: no selection group " + std::to_string(group));
  return static_cast<int64_t>(s.groups[group].scores.size() + s.groups[group].window_scores.size());
}

const std::vector<float>& KvCache::store_scores(int seq, int group) const {
  const Sequence& s = sequence(seq);
  check(group >= 0 && group < static_cast<int>(s.groups.size()), "kv cache: no selection group " + std::to_string(group));
  return s.groups[group].scores;
}

std::vector<int64_t> KvCache::kept_positions(int seq, int group) const {
  const Sequence& s = sequence(seq);
  check(group >= 0 && group < static_cast<int>(s.groups.size()), "kv cache: no selection group " + std::to_string(group));
  std::vector<int64_t> positions(s.groups[group].positions.begin(), s.groups[group].positions.end());
  std::sort(positions.begin(), positions.end());
  return positions;
}

}  // namespace podkv
