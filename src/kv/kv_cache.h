// The host-side bookkeeping of a paged KV cache for many sequences under one
// byte budget: page allocator and free list, page tables, commit and window
// release, selection stores and their scores, byte accounting, all-or-nothing
// reservation. The bytes live in a KvPool owned by a backend (kv_pool.h); the
// kernels read them through a plain per-step KvView (kv_view.h).
//
// A page holds `page_tokens` entries (kv_entry.h: one head_dim-vector in the
// cache's entry type) of one stream (the keys or the values of one layer and
// KV head of one sequence). Each sequence has, per stream, a host-side page table
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

#include "kv/kv_entry.h"
#include "kv/kv_layout.h"
#include "kv/kv_pool.h"
#include "kv/kv_view.h"
#include "util/error.h"

namespace podkv {

// Thrown when a sequence or tokens do not fit the budget. Nothing is changed.
class KvCacheFull : public Error {
 public:
  using Error::Error;
};

class KvCache {
 public:
  // `budget_bytes` caps the pool: budget / page_bytes pages.
  KvCache(KvLayout layout, size_t budget_bytes, int page_tokens = 16, KvDType dtype = KvDType::F32);

  const KvLayout& layout() const { return layout_; }
  KvDType dtype() const { return dtype_; }
  int page_tokens() const { return page_tokens_; }
  size_t entry_bytes() const { return entry_bytes_; }
  size_t page_bytes() const { return page_bytes_; }
  size_t num_pages() const { return total_pages_; }

  // The memory whose entries commit() and end_prefill() move when token
  // selection keeps or drops tokens. Without one, the cache keeps only the
  // bookkeeping (memory planning, tests of the accounting).
  void attach_pool(KvPool* pool) { pool_ = pool; }
  KvPool* pool() const { return pool_; }

  // A new empty sequence; returns its id.
  int add_sequence();
  void remove_sequence(int seq);
  int64_t length(int seq) const;

  // Makes room for positions [length, new_length) in every stream that stores
  // them, all or nothing: throws KvCacheFull (naming the pages needed and free)
  // and changes nothing when the pool cannot hold them.
  void reserve(int seq, int64_t new_length);
  // Free pages reserve(seq, new_length) would take.
  int64_t pages_to_reserve(int seq, int64_t new_length) const;
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

  // Adds a step's attention to a selection group's accumulated scores.
  // `region`: the group's part of the step's score output (kv_view.h): store
  // slots [0, store_size) then positions [window_base, reserved length).
  void add_scores(int seq, int group, const float* region);
  // Kept distant tokens of a group (its store size) and their scores by slot.
  int64_t store_size(int seq, int group) const;
  const std::vector<float>& store_scores(int seq, int group) const;
  // Scores of the positions [window_base, reserved length) still in the windows.
  const std::vector<float>& window_scores(int seq, int group) const;
  // Floats of a group's score region for the reserved length (store slots + window positions).
  int64_t score_region_size(int seq, int group) const;
  // Positions of the distant tokens group `group` keeps, ascending.
  std::vector<int64_t> kept_positions(int seq, int group) const;
  // First position still in the windows (sink excluded): max(ns, length - nr).
  int64_t window_base(int seq) const { return sequence(seq).window_base; }

  // Page table of one stream (kind: kv_view.h's kKeys, kValues, or the
  // slot-indexed selection stores kKeyStore, kValueStore): physical page per
  // logical page, -1 where not held.
  const std::vector<int32_t>& page_table(int seq, int kind, int layer, int head) const;
  // Changes whenever any page table of the sequence changes (a page assigned, given back, or a
  // store shrunk), and never takes a value twice in the process (any cache): a view builder
  // that saw these versions can keep the page tables it copied.
  uint64_t tables_version(int seq) const { return sequence(seq).tables_version; }
  // Page and entry of position `pos` of a keys/values stream; throws Error
  // when it is not reserved (written positions must be reserved and held).
  std::pair<int32_t, int32_t> entry_location(int seq, int kind, int layer, int head, int64_t pos) const;

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
    int64_t released_pages = 0;  // windowed streams gave back their distant pages below this (commit)
    std::vector<std::vector<int32_t>> key_pages;    // [layer * H + head][logical page]
    std::vector<std::vector<int32_t>> value_pages;  // same
    std::vector<std::vector<int32_t>> key_store_pages;    // [layer * H + head][slot page], Selected only
    std::vector<std::vector<int32_t>> value_store_pages;  // same
    std::vector<Group> groups;   // [selection group]
    uint64_t tables_version = 0; // tables_version()
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
  std::pair<int32_t, int32_t> store_location(Sequence& s, const Member& m, int64_t slot);
  void run_copies();
  void move_to_stores(Sequence& s, int64_t new_base);
  void drop_slots(Sequence& s, int group, std::vector<int32_t> slots);
  // These three return whether a page table changed.
  bool trim_stores(Sequence& s);
  [[noreturn]] void throw_full(int seq, int64_t needed, int64_t new_length) const;
  // Gives back table's pages [from_page, end_page) (commit: those whose positions all left the window).
  bool release_window_pages(std::vector<int32_t>& table, int64_t from_page, int64_t end_page);
  // A new tables_version for `s` (from a process-wide counter).
  static void tables_changed(Sequence& s);
  std::pair<int32_t, int32_t> location(const std::vector<int32_t>& table, int64_t pos, const char* kind, int layer,
                                       int head) const;

  KvLayout layout_;
  KvDType dtype_;
  int page_tokens_;
  size_t entry_bytes_;
  size_t page_bytes_;
  size_t total_pages_;
  KvPool* pool_ = nullptr;
  std::vector<EntryCopy> copies_;  // pending moves of one commit / end_prefill
  std::vector<int32_t> free_pages_;
  std::vector<Sequence> sequences_;
  std::vector<std::vector<Member>> group_members_;  // [selection group]
};

}  // namespace podkv
