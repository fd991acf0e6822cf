#include "kv/kv_cache.h"

#include <algorithm>
#include <atomic>
#include <string>

#include "kv/token_classes.h"
#include "util/int_math.h"

namespace podkv {

KvCache::KvCache(KvLayout layout, size_t budget_bytes, int page_tokens, KvDType dtype)
    : layout_(std::move(layout)), dtype_(dtype), page_tokens_(page_tokens) {
  layout_.validate();
  check(page_tokens_ >= 1, "kv cache: page size must be at least one token");
  entry_bytes_ = kv_entry_bytes(dtype_, layout_.head_dim);
  page_bytes_ = static_cast<size_t>(page_tokens_) * entry_bytes_;
  total_pages_ = budget_bytes / page_bytes_;
  check(total_pages_ < (1ull << 31), "kv cache: budget of " + std::to_string(budget_bytes) + " bytes is too large");
  free_pages_.resize(total_pages_);
  // Pop from the back hands out low pages first.
  for (size_t i = 0; i < total_pages_; ++i) free_pages_[i] = static_cast<int32_t>(total_pages_ - 1 - i);
  group_members_.resize(layout_.num_selection_groups);
  for (size_t i = 0; i < layout_.keys.size(); ++i) {
    if (layout_.keys[i].retention == Retention::Selected)
      group_members_[layout_.keys[i].selection_group].push_back(Member{true, static_cast<int>(i)});
    if (layout_.values[i].retention == Retention::Selected)
      group_members_[layout_.values[i].selection_group].push_back(Member{false, static_cast<int>(i)});
  }
}

void KvCache::tables_changed(Sequence& s) {
  static std::atomic<uint64_t> next{1};
  s.tables_version = next.fetch_add(1, std::memory_order_relaxed);
}

int KvCache::add_sequence() {
  Sequence s;
  s.live = true;
  tables_changed(s);
  const size_t streams = static_cast<size_t>(layout_.num_layers) * layout_.num_kv_heads;
  s.key_pages.resize(streams);
  s.value_pages.resize(streams);
  s.key_store_pages.resize(streams);
  s.value_store_pages.resize(streams);
  s.groups.resize(group_members_.size());
  s.window_base = window_base_at(0);
  for (size_t i = 0; i < sequences_.size(); ++i) {
    if (!sequences_[i].live) {
      sequences_[i] = std::move(s);
      return static_cast<int>(i);
    }
  }
  sequences_.push_back(std::move(s));
  return static_cast<int>(sequences_.size() - 1);
}

KvCache::Sequence& KvCache::sequence(int seq) {
  // Per KV stream of every step: the message is built only on failure.
  check(seq >= 0 && static_cast<size_t>(seq) < sequences_.size() && sequences_[seq].live,
        [&] { return "kv cache: no sequence " + std::to_string(seq); });
  return sequences_[seq];
}

const KvCache::Sequence& KvCache::sequence(int seq) const {
  return const_cast<KvCache*>(this)->sequence(seq);
}

void KvCache::remove_sequence(int seq) {
  Sequence& s = sequence(seq);
  for (auto* tables : {&s.key_pages, &s.value_pages, &s.key_store_pages, &s.value_store_pages}) {
    for (auto& table : *tables) {
      for (int32_t page : table) if (page >= 0) free_pages_.push_back(page);
    }
  }
  s = Sequence{};
}

int64_t KvCache::length(int seq) const { return sequence(seq).length; }

int64_t KvCache::pages_needed(const Sequence& s, int64_t new_length) const {
  int64_t needed = 0;
  const int64_t last_page = ceil_div(new_length, page_tokens_);
  auto count = [&](const std::vector<StreamRule>& rules, const std::vector<std::vector<int32_t>>& tables) {
    for (size_t i = 0; i < rules.size(); ++i) {
      if (rules[i].retention == Retention::None) continue;
      const auto& table = tables[i];
      const int64_t first_page = s.length / page_tokens_;
      for (int64_t p = first_page; p < last_page; ++p) {
        if (p >= static_cast<int64_t>(table.size()) || table[p] < 0) ++needed;
      }
    }
  };
  count(layout_.keys, s.key_pages);
  count(layout_.values, s.value_pages);
  // Selection stores: room for every token that may leave the window.
  const int64_t moves = std::max<int64_t>(0, window_base_at(new_length) - s.window_base);
  for (size_t g = 0; g < group_members_.size(); ++g) {
    const int64_t want = ceil_div(static_cast<int64_t>(s.groups[g].positions.size()) + moves, page_tokens_);
    for (const Member& m : group_members_[g]) {
      const auto& table = m.key ? s.key_store_pages[m.stream] : s.value_store_pages[m.stream];
      needed += std::max<int64_t>(0, want - static_cast<int64_t>(table.size()));
    }
  }
  return needed;
}

int64_t KvCache::pages_to_reserve(int seq, int64_t new_length) const {
  const Sequence& s = sequence(seq);
  return new_length <= s.length ? 0 : pages_needed(s, new_length);
}

void KvCache::reserve(int seq, int64_t new_length) {
  Sequence& s = sequence(seq);
  if (new_length <= s.length) return;
  const int64_t needed = pages_needed(s, new_length);
  if (needed > static_cast<int64_t>(free_pages_.size())) {
    throw_full(seq, needed, new_length);
  }
  const int64_t last_page = ceil_div(new_length, page_tokens_);
  bool changed = false;
  auto grow = [&](const std::vector<StreamRule>& rules, std::vector<std::vector<int32_t>>& tables) {
    for (size_t i = 0; i < rules.size(); ++i) {
      if (rules[i].retention == Retention::None) continue;
      auto& table = tables[i];
      if (static_cast<int64_t>(table.size()) < last_page) table.resize(last_page, -1), changed = true;
      for (int64_t p = s.length / page_tokens_; p < last_page; ++p) {
        if (table[p] < 0) {
          table[p] = free_pages_.back();
          free_pages_.pop_back();
          changed = true;
        }
      }
    }
  };
  grow(layout_.keys, s.key_pages);
  grow(layout_.values, s.value_pages);
  const int64_t moves = std::max<int64_t>(0, window_base_at(new_length) - s.window_base);
  for (size_t g = 0; g < group_members_.size(); ++g) {
    Group& group = s.groups[g];
    const int64_t want = ceil_div(static_cast<int64_t>(group.positions.size()) + moves, page_tokens_);
    for (const Member& m : group_members_[g]) {
      auto& table = store_table(s, m);
      while (static_cast<int64_t>(table.size()) < want) {
        table.push_back(free_pages_.back());
        free_pages_.pop_back();
        changed = true;
      }
    }
    const size_t window_span = static_cast<size_t>(std::max<int64_t>(0, new_length - s.window_base));
    if (group.window_scores.size() < window_span) group.window_scores.resize(window_span, 0.0f);
  }
  if (changed) tables_changed(s);
}

namespace {

// Logical pages [0, end_page) that a Window stream still holds once `length`
// tokens are committed: pages with a sink token, and pages not wholly distant.
int64_t window_pages_held(int64_t length, int64_t end_page, int64_t page, int64_t sink, int64_t recent) {
  if (length == 0) return 0;
  const int64_t last_distant = length - 1 - recent;
  int64_t released = 0;
  if (last_distant >= sink) {
    const int64_t first = (sink + page - 1) / page;
    const int64_t end = std::min((last_distant + 1) / page, end_page);
    released = std::max<int64_t>(0, end - first);
  }
  return end_page - released;
}

}  // namespace

KvCache::StreamCounts KvCache::stream_counts() const {
  StreamCounts counts;
  for (auto* rules : {&layout_.keys, &layout_.values}) {
    for (const StreamRule& r : *rules) {
      counts.full += r.retention == Retention::Full;
      counts.window += r.retention == Retention::Window || r.retention == Retention::Selected;
      counts.selected += r.retention == Retention::Selected;
    }
  }
  return counts;
}

int64_t KvCache::window_base_at(int64_t length) const {
  return podkv::window_base_at(length, layout_.sink_tokens, layout_.recent_tokens);
}

int64_t KvCache::store_tokens(int64_t length, int64_t prefill_length) const {
  if (prefill_length == -2) prefill_length = length;
  if (layout_.selection == Selection::SnapKV && (prefill_length < 0 || length < prefill_length))
    return layout_.distant_tokens(length);  // SnapKV keeps everything until its prefill ends
  return layout_.selected_tokens(length, prefill_length);
}

void KvCache::throw_full(int seq, int64_t needed, int64_t new_length) const {
  throw KvCacheFull("kv cache full: sequence " + std::to_string(seq) + " needs " + std::to_string(needed) +
                    " more pages (" + std::to_string(needed * page_bytes_) + " bytes) to reach " +
                    std::to_string(new_length) + " tokens, " + std::to_string(free_pages_.size()) +
                    " pages free of " + std::to_string(total_pages_) + " (budget " +
                    std::to_string(budget_bytes()) + " bytes)");
}

int64_t KvCache::held_pages(int64_t length, int64_t prefill_length) const {
  const int64_t pages = ceil_div(length, page_tokens_);
  const StreamCounts n = stream_counts();
  return n.full * pages +
         n.window * window_pages_held(length, pages, page_tokens_, layout_.sink_tokens, layout_.recent_tokens) +
         n.selected * ceil_div(store_tokens(length, prefill_length), page_tokens_);
}

int64_t KvCache::peak_pages(int64_t from, int64_t to, int64_t chunk, int64_t prefill_length) const {
  check(chunk >= 1, "kv cache: chunk must be at least one token");
  const StreamCounts n = stream_counts();
  int64_t peak = held_pages(from, prefill_length < 0 ? -1 : prefill_length);
  for (int64_t start = from; start < to;) {
    const int64_t end = std::min(to, start + chunk);
    // During the chunk: what was held at `start`, plus every page of [start, end) not yet held.
    const int64_t held_window = window_pages_held(start, ceil_div(start, page_tokens_), page_tokens_,
                                                  layout_.sink_tokens, layout_.recent_tokens);
    const int64_t new_pages = ceil_div(end, page_tokens_) - start / page_tokens_;
    const bool partial_held = start % page_tokens_ != 0;  // the page of `start` is already counted
    const int64_t window_during = held_window + new_pages - (partial_held && held_window > 0 ? 1 : 0);
    // Stores: what they hold at `start` plus room for every token leaving the window.
    const int64_t moves = window_base_at(end) - window_base_at(start);
    const int64_t store_during = ceil_div(store_tokens(start, prefill_length) + moves, page_tokens_);
    peak = std::max(peak, n.full * ceil_div(end, page_tokens_) + n.window * window_during + n.selected * store_during);
    start = end;
  }
  return peak;
}

void KvCache::check_fits(int seq, int64_t new_length, int64_t chunk, bool is_prefill) const {
  const Sequence& s = sequence(seq);
  int64_t prefill = s.prefill_length;
  if (layout_.selection == Selection::SnapKV && prefill < 0 && is_prefill) prefill = new_length;
  // The formula, not a walk of every page table: this runs every decode step
  // (tests check the two agree after every step).
  const int64_t held = held_pages(s.length, layout_.selection == Selection::SnapKV ? s.prefill_length : -2);
  const int64_t needed = peak_pages(s.length, new_length, chunk, prefill) - held;
  if (needed > static_cast<int64_t>(free_pages_.size()))
    throw_full(seq, needed, new_length);
}

bool KvCache::release_window_pages(std::vector<int32_t>& table, int64_t from_page, int64_t end_page) {
  bool released = false;
  for (int64_t p = from_page; p < end_page && p < static_cast<int64_t>(table.size()); ++p) {
    if (table[p] >= 0) {
      free_pages_.push_back(table[p]);
      table[p] = -1;
      released = true;
    }
  }
  return released;
}

void KvCache::commit(int seq, int64_t new_length) {
  Sequence& s = sequence(seq);
  check(new_length >= s.length, "kv cache: commit cannot shrink a sequence");
  s.length = new_length;
  if (new_length == 0) return;
  const int64_t new_base = window_base_at(new_length);
  if (new_base > s.window_base) {
    if (!group_members_.empty()) {
      move_to_stores(s, new_base);  // before their window pages go
      run_copies();
    }
    s.window_base = new_base;
  }
  auto windowed = [](const StreamRule& r) {
    return r.retention == Retention::Window || r.retention == Retention::Selected;
  };
  bool changed = false;
  // Positions j with sink <= j <= last_query - recent are distant; a page is given back once every
  // position in it is distant. Pages below released_pages went at an earlier commit (reserve only
  // assigns pages from the committed length on), so each commit walks only the pages that became
  // distant since (a walk of them all, every stream and step, was most of a PoD step's host time).
  const int64_t last_distant = new_length - 1 - layout_.recent_tokens;
  if (last_distant >= layout_.sink_tokens) {
    const int64_t first_page = std::max(ceil_div(layout_.sink_tokens, page_tokens_), s.released_pages);
    const int64_t end_page = (last_distant + 1) / page_tokens_;  // pages fully <= last_distant
    if (end_page > first_page) {
      for (size_t i = 0; i < layout_.keys.size(); ++i) {
        if (windowed(layout_.keys[i])) changed |= release_window_pages(s.key_pages[i], first_page, end_page);
        if (windowed(layout_.values[i])) changed |= release_window_pages(s.value_pages[i], first_page, end_page);
      }
      s.released_pages = end_page;
    }
  }
  changed |= trim_stores(s);
  if (changed) tables_changed(s);
}

std::pair<int32_t, int32_t> KvCache::location(const std::vector<int32_t>& table, int64_t pos, const char* kind,
                                              int layer, int head) const {
  const int64_t logical = pos / page_tokens_;
  if (pos < 0 || logical >= static_cast<int64_t>(table.size()) || table[logical] < 0)
    throw Error(std::string("kv cache: ") + kind + " of layer " + std::to_string(layer) + " head " +
                std::to_string(head) + ": position " + std::to_string(pos) + " is not reserved");
  return {table[logical], static_cast<int32_t>(pos % page_tokens_)};
}

const std::vector<int32_t>& KvCache::page_table(int seq, int kind, int layer, int head) const {
  check(layer >= 0 && layer < layout_.num_layers && head >= 0 && head < layout_.num_kv_heads,
        [&] { return "kv cache: no stream for layer " + std::to_string(layer) + " head " + std::to_string(head); });
  const Sequence& s = sequence(seq);
  const size_t i = static_cast<size_t>(layer) * layout_.num_kv_heads + head;
  switch (kind) {
    case kKeys: return s.key_pages[i];
    case kValues: return s.value_pages[i];
    case kKeyStore: return s.key_store_pages[i];
    case kValueStore: return s.value_store_pages[i];
  }
  throw Error("kv cache: unknown stream kind " + std::to_string(kind));
}

std::pair<int32_t, int32_t> KvCache::entry_location(int seq, int kind, int layer, int head, int64_t pos) const {
  check(kind == kKeys || kind == kValues, "kv cache: entry_location is for keys and values");
  return location(page_table(seq, kind, layer, head), pos, kind == kKeys ? "keys" : "values", layer, head);
}

size_t KvCache::bytes_in_use(int seq) const {
  const Sequence& s = sequence(seq);
  const int64_t prefill = layout_.selection == Selection::SnapKV ? s.prefill_length : -2;
  return static_cast<size_t>(layout_.retained_vectors(s.length, prefill)) * entry_bytes_;
}

size_t KvCache::bytes_reserved(int seq) const {
  const Sequence& s = sequence(seq);
  size_t pages = 0;
  for (auto* tables : {&s.key_pages, &s.value_pages, &s.key_store_pages, &s.value_store_pages}) {
    for (const auto& table : *tables) pages += std::count_if(table.begin(), table.end(), [](int32_t p) { return p >= 0; });
  }
  return pages * page_bytes_;
}

int64_t KvCache::tokens_that_fit(int seq) const {
  const Sequence& s = sequence(seq);
  // pages_needed grows monotonically with the length: binary search.
  int64_t lo = 0, hi = 1;
  while (pages_needed(s, s.length + hi) <= static_cast<int64_t>(free_pages_.size())) {
    lo = hi;
    hi *= 2;
    if (hi > (int64_t{1} << 40)) return lo;
  }
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (pages_needed(s, s.length + mid) <= static_cast<int64_t>(free_pages_.size())) lo = mid;
    else hi = mid;
  }
  return lo;
}

}  // namespace podkv
