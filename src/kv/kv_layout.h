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
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace podkv {

enum class Retention { Full, Window, None };

struct StreamRule {
  Retention retention = Retention::Full;
  int distant_source = -1;   // layer read for distant tokens when not Full; -1 = masked
  int proximal_source = -1;  // layer read for proximal tokens when None
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

  // Every stream Full: the uncompressed cache.
  static KvLayout dense(int num_layers, int num_kv_heads, int head_dim);

  const StreamRule& key_rule(int layer, int head) const { return keys[layer * num_kv_heads + head]; }
  const StreamRule& value_rule(int layer, int head) const { return values[layer * num_kv_heads + head]; }

  // Tokens a stream with `rule` holds once the sequence has `length` tokens
  // (the last query at length - 1). The analytic memory formula is the sum of
  // this over streams times head_dim · bytes per element.
  int64_t retained_tokens(const StreamRule& rule, int64_t length) const;
  // Entries (head_dim-vectors) one sequence of `length` tokens keeps in all streams.
  int64_t retained_vectors(int64_t length) const;

  // Throws Error when sources point at layers that do not keep what is needed.
  void validate() const;
};

}  // namespace podkv
