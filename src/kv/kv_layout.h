// Which keys and values a KV cache stores, per (layer, KV head), and where the
// ones it does not store come from. This is plain data so that the CPU cache,
// the attention kernels and (later) the CUDA backend read the same description.
//
// Positions of a query at t fall in three spans (pod-method.md, token classes):
//   sink     [0, ns)
//   distant  [ns, t - nr]        (empty when t - nr < ns)
//   recent   (t - nr, t]
// A stream (the keys, or the values, of one layer and KV head) either keeps
// every token (Full), keeps only the sink and the recent window (Window; the
// pages of tokens that leave the window are given back), or keeps nothing
// (None). Distant tokens of a stream that does not keep them are read from the
// same KV head of `distant_source` layer (PoD: the block's anchor), or are
// masked out when `distant_source` is -1 (StreamingLLM). Proximal tokens of a
// stream that keeps nothing come from `proximal_source` (CLA).
//
// Token selection (H2O, SnapKV, PoD + SnapKV): a Selected stream keeps the sink
// and the recent window like a Window stream, plus the distant tokens its
// selection group decided to keep, in a separate compact store (one slot per
// kept token, any order). The streams of a group (e.g. K and V of one layer and
// head, or under PoD + SnapKV the anchor's K and the V of every layer of a
// block) keep the same tokens, in the same slots. The group's accumulated
// attention scores decide which tokens stay:
//   HeavyHitters  after every commit, the distant store is cut back to `budget`
//                 tokens by dropping the lowest accumulated attention (H2O)
//   SnapKV        at the end of prefill, `budget` distant tokens are kept by the
//                 attention of the last `observation_window` prompt queries,
//                 max-pooled over `pool_kernel` neighbouring positions; tokens
//                 that become distant later are all kept
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace podkv {

enum class Retention { Full, Window, None, Selected };

enum class Selection { None, HeavyHitters, SnapKV };

struct StreamRule {
  Retention retention = Retention::Full;
  int distant_source = -1;   // layer read for distant tokens when not Full; -1 = masked
  int proximal_source = -1;  // layer read for proximal tokens when None
  int selection_group = -1;  // Selected: the group whose kept tokens this stream holds
};

struct KvLayout {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int64_t sink_tokens = 0;
  int64_t recent_tokens = 0;
  std::vector<StreamRule> keys;    // [layer * num_kv_heads + head]
  std::vector<StreamRule> values;  // [layer * num_kv_heads + head]
  std::string policy = "dense";
  // Token selection (Selected streams).
  Selection selection = Selection::None;
  int64_t budget = 0;               // distant tokens a group keeps
  int64_t observation_window = 32;  // SnapKV: last prompt queries whose attention is scored
  int64_t pool_kernel = 7;          // SnapKV: max-pooling width over key positions (odd)
  int num_selection_groups = 0;

  // Every stream Full: the uncompressed cache.
  static KvLayout dense(int num_layers, int num_kv_heads, int head_dim);

  const StreamRule& key_rule(int layer, int head) const { return keys[layer * num_kv_heads + head]; }
  const StreamRule& value_rule(int layer, int head) const { return values[layer * num_kv_heads + head]; }

  // Tokens a stream with `rule` holds once the sequence has `length` tokens
  // (the last query at length - 1) and, for SnapKV, its prefill of
  // `prefill_length` tokens was selected (-1: the prefill is still running;
  // default: the whole sequence was the prefill). The analytic memory formula
  // is the sum of this over streams times head_dim · bytes per element.
  int64_t retained_tokens(const StreamRule& rule, int64_t length, int64_t prefill_length = -2) const;
  // Entries (head_dim-vectors) one sequence of `length` tokens keeps in all streams.
  int64_t retained_vectors(int64_t length, int64_t prefill_length = -2) const;

  // Tokens of a sequence of `length` that have left the recent window (and
  // are not sink): the candidates of token selection.
  int64_t distant_tokens(int64_t length) const;
  // Distant tokens a selection group keeps at `length` (see retained_tokens).
  int64_t selected_tokens(int64_t length, int64_t prefill_length = -2) const;
  // The window part of a Window or Selected stream: sink + recent tokens held.
  int64_t window_tokens(int64_t length) const;

  // Throws Error when sources point at layers that do not keep what is needed.
  void validate() const;

  // The selection group whose slots hold the distant tokens a stream with
  // `rule` reads (its own, or its distant source's), or -1 when they are
  // position-indexed (Full) or masked. `rules` is `keys` or `values`.
  int distant_group(const StreamRule& rule, const std::vector<StreamRule>& rules, int head) const;
};

}  // namespace podkv
