// A paged KV cache for many sequences under one byte budget, on the CPU.
//
// Storage is one flat pool of pages; a page holds `page_tokens` vectors of
// head_dim floats for one stream (the keys or the values of one layer and KV
// head of one sequence). Each sequence has, per stream, a host-side page table
// indexed by logical page (position / page_tokens), -1 where nothing is held.
// Streams follow the KvLayout: Full streams hold every page, Window streams give
// pages back once all their positions have left the sink and the recent window,
// None streams hold nothing. Selected streams hold their window like Window
// streams, plus a slot-indexed store (its own page table) of the distant tokens
// their selection group keeps; the group's positions and accumulated attention
// scores are per sequence. No per-token heap objects, so the same tables can be
// copied to a GPU as they are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "kv/kv_layout.h"
#include "util/error.h"

namespace podkv {

// Thrown when a sequence or tokens do not fit the budget. Nothing is changed.
class KvCacheFull : public Error {
 public:
  using Error::Error;
};

// Read access to one stream of one sequence: vector of position `pos` (or of
// slot `pos` in a selection store).
struct StreamView {
  const int32_t* page_table = nullptr;  // [logical pages], -1 = not held
  int64_t num_pages = 0;
  const float* pool = nullptr;
  int64_t page_tokens = 0;
  int64_t head_dim = 0;

  const float* at(int64_t pos) const {
    const int32_t page = page_table[pos / page_tokens];
    return pool + (static_cast<int64_t>(page) * page_tokens + pos % page_tokens) * head_dim;
  }
  bool holds(int64_t pos) const {
    const int64_t logical = pos / page_tokens;
    return pos >= 0 && logical < num_pages && page_table[logical] >= 0;
  }
};

class KvCache {
 public:
  // `budget_bytes` caps the pool; pages are touched (committed by the OS) only when used.
  KvCache(KvLayout layout, size_t budget_bytes, int page_tokens = 16);

  const KvLayout& layout() const { return layout_; }
  int page_tokens() const { return page_tokens_; }
  size_t page_bytes() const { return page_bytes_; }

  // A new empty sequence; returns its id.
  int add_sequence();
  void remove_sequence(int seq);
  int64_t length(int seq) const;

  // Makes room for positions [length, new_length) in every stream that stores
  // them, all or nothing: throws KvCacheFull (naming the pages needed and free)
  // and changes nothing when the pool cannot hold them.
  void reserve(int seq, int64_t new_length);
  // Pages one sequence holds at most while it grows from `from` to `to` tokens
  // in chunks of at most `chunk` (reserve, write, commit per chunk). Window
  // streams hold a chunk's pages until its commit, so a long prefill in one
  // chunk peaks near dense size: chunked prefill keeps PoD's saving.
  // `prefill_length` (SnapKV): the length at which the prefill's selection
  // runs (end_prefill), or -1 when it does not happen in this range.
  int64_t peak_pages(int64_t from, int64_t to, int64_t chunk, int64_t prefill_length = -1) const;
  // Pages a sequence of `length` committed tokens holds (`prefill_length` as
  // in KvLayout::retained_tokens).
  int64_t held_pages(int64_t length, int64_t prefill_length = -2) const;
  // Throws KvCacheFull unless growing `seq` to `new_length` in chunks of
  // `chunk` fits the free pages (checked before the first chunk is written).
  // The tokens [length, new_length) are the sequence's prefill when
  // `is_prefill` (SnapKV then selects at its end).
  void check_fits(int seq, int64_t new_length, int64_t chunk, bool is_prefill = false) const;

  // Declares positions < new_length written. Tokens that left the recent
  // window of the last query (new_length - 1) move into the selection stores
  // of Selected streams (H2O then drops the lowest-scored beyond the budget),
  // and the pages of Window and Selected streams that hold only such tokens
  // are given back.
  void commit(int seq, int64_t new_length);

  // SnapKV: ends the prefill of `seq` (once): keeps per selection group the
  // `budget` distant tokens with the highest pooled observation-window score,
  // frees the rest. No-op for other layouts and after the first call.
  void end_prefill(int seq);
  // Whether `seq`'s prefill selection has run (always true without SnapKV).
  bool prefill_done(int seq) const;

  // Accumulated attention of a selection group, written by attention:
  // store[slot] for kept distant tokens, window[pos - window_base] for
  // positions >= window_base (positions below it, other than the sink, have
  // left the window).
  struct GroupScores {
    float* store = nullptr;
    float* window = nullptr;
    int64_t window_base = 0;
    int64_t store_size = 0;
  };
  GroupScores group_scores(int seq, int group);
  // Positions of the distant tokens group `group` keeps, ascending.
  std::vector<int64_t> kept_positions(int seq, int group) const;
  // First position still in the windows (sink excluded): max(ns, length - nr).
  int64_t window_base(int seq) const { return sequence(seq).window_base; }

  // Write access to the slot of `pos` (reserved, not yet committed or still held).
  float* key_slot(int seq, int layer, int head, int64_t pos);
  float* value_slot(int seq, int layer, int head, int64_t pos);
  StreamView keys(int seq, int layer, int head) const;
  StreamView values(int seq, int layer, int head) const;
  // Slot-indexed selection stores of Selected streams (slots 0 .. group size).
  StreamView key_store(int seq, int layer, int head) const;
  StreamView value_store(int seq, int layer, int head) const;

  // Accounting. In use = vectors the layout retains for the committed length
  // times vector bytes (the analytic formula); reserved = pages held times page
  // bytes (in use plus partly filled pages).
  size_t bytes_in_use(int seq) const;
  size_t bytes_reserved(int seq) const;
  size_t total_bytes_reserved() const { return (total_pages_ - free_pages_.size()) * page_bytes_; }
  size_t budget_bytes() const { return total_pages_ * page_bytes_; }
  size_t free_pages() const { return free_pages_.size(); }
  // How many more tokens sequence `seq` can grow by before reserve() refuses.
  int64_t tokens_that_fit(int seq) const;

 private:
  // A selection group's kept distant tokens and scores, for one sequence.
  struct Group {
    std::vector<int32_t> positions;    // [slot]
    std::vector<float> scores;         // [slot] accumulated attention
    std::vector<float> window_scores;  // [pos - window_base]
  };
  struct Sequence {
    bool live = false;
    int64_t length = 0;
    int64_t window_base = 0;     // max(ns, length - nr): positions below (not sink) left the window
    int64_t prefill_length = -1; // SnapKV: length at end_prefill, -1 before
    std::vector<std::vector<int32_t>> key_pages;    // [layer * H + head][logical page]
    std::vector<std::vector<int32_t>> value_pages;  // same
    std::vector<std::vector<int32_t>> key_store_pages;    // [layer * H + head][slot page], Selected only
    std::vector<std::vector<int32_t>> value_store_pages;  // same
    std::vector<Group> groups;   // [selection group]
  };
  // A stream of a selection group: keys or values of stream index layer * H + head.
  struct Member {
    bool key = true;
    int stream = 0;
  };

  Sequence& sequence(int seq);
  const Sequence& sequence(int seq) const;
  int64_t pages_needed(const Sequence& s, int64_t new_length) const;
  // Streams per sequence: Full, Window (counting Selected streams' windows), Selected.
  struct StreamCounts {
    int64_t full = 0, window = 0, selected = 0;
  };
  StreamCounts stream_counts() const;
  // Distant tokens a group's store holds at `length` when SnapKV selects at `prefill_length`.
  int64_t store_tokens(int64_t length, int64_t prefill_length) const;
  int64_t window_base_at(int64_t length) const;
  std::vector<int32_t>& store_table(Sequence& s, const Member& m);
  float* store_slot(Sequence& s, const Member& m, int64_t slot);
  void move_to_stores(Sequence& s, int64_t new_base);
  void drop_slots(Sequence& s, int group, std::vector<int32_t> slots);
  void trim_stores(Sequence& s);
  [[noreturn]] void throw_full(int seq, int64_t needed, int64_t new_length) const;
  void release_window_pages(std::vector<int32_t>& table, int64_t last_query);
  float* slot(std::vector<int32_t>& table, int64_t pos, const char* kind, int layer, int head);
  StreamView view(const std::vector<int32_t>& table) const;

  KvLayout layout_;
  int page_tokens_;
  size_t page_floats_;
  size_t page_bytes_;
  size_t total_pages_;
  std::unique_ptr<float[]> pool_;
  std::vector<int32_t> free_pages_;
  std::vector<Sequence> sequences_;
  std::vector<std::vector<Member>> group_members_;  // [selection group]
};

}  // namespace podkv
