#include "kv/kv_layout.h"

#include <algorithm>

#include "util/error.h"

namespace podkv {

KvLayout KvLayout::dense(int num_layers, int num_kv_heads, int head_dim) {
  KvLayout layout;
  layout.num_layers = num_layers;
  layout.num_kv_heads = num_kv_heads;
  layout.head_dim = head_dim;
  layout.keys.assign(static_cast<size_t>(num_layers) * num_kv_heads, StreamRule{});
  layout.values = layout.keys;
  return layout;
}

int64_t KvLayout::window_tokens(int64_t length) const {
  const int64_t sink = std::min(sink_tokens, length);
  // recent = (t - nr, t] with t = length - 1, clipped so it does not overlap the sink.
  const int64_t recent_begin = std::max(sink, length - recent_tokens);
  return sink + (length - recent_begin);
}

int64_t KvLayout::distant_tokens(int64_t length) const { return length - window_tokens(length); }

int64_t KvLayout::selected_tokens(int64_t length, int64_t prefill_length) const {
  if (prefill_length == -2) prefill_length = length;
  const int64_t distant = distant_tokens(length);
  if (selection == Selection::HeavyHitters) return std::min(budget, distant);
  if (selection == Selection::SnapKV) {
    if (prefill_length < 0) return distant;  // the prefill is still running: nothing dropped yet
    const int64_t at_prefill = distant_tokens(prefill_length);
    return std::min(budget, at_prefill) + (distant - at_prefill);
  }
  return 0;
}

int64_t KvLayout::retained_tokens(const StreamRule& rule, int64_t length, int64_t prefill_length) const {
  switch (rule.retention) {
    case Retention::Full: return length;
    case Retention::None: return 0;
    case Retention::Window: return window_tokens(length);
    case Retention::Selected: return window_tokens(length) + selected_tokens(length, prefill_length);
  }
  return 0;
}

int64_t KvLayout::retained_vectors(int64_t length, int64_t prefill_length) const {
  int64_t total = 0;
  for (const StreamRule& r : keys) total += retained_tokens(r, length, prefill_length);
  for (const StreamRule& r : values) total += retained_tokens(r, length, prefill_length);
  return total;
}

void KvLayout::validate() const {
  check(num_layers > 0 && num_kv_heads > 0 && head_dim > 0, "kv layout: empty model geometry");
  const size_t streams = static_cast<size_t>(num_layers) * num_kv_heads;
  check(keys.size() == streams && values.size() == streams, "kv layout: wrong number of stream rules");
  check(sink_tokens >= 0 && recent_tokens >= 0, "kv layout: negative sink or recent window");
  auto check_rules = [&](const std::vector<StreamRule>& rules, const char* kind) {
    for (int layer = 0; layer < num_layers; ++layer) {
      for (int head = 0; head < num_kv_heads; ++head) {
        const StreamRule& r = rules[layer * num_kv_heads + head];
        const std::string where = std::string("kv layout: ") + kind + " of layer " + std::to_string(layer) +
                                  " head " + std::to_string(head);
        if ((r.retention == Retention::Window || r.retention == Retention::Selected) && recent_tokens < 1)
          throw Error(where + ": a window stream needs at least one recent token");
        if (r.retention == Retention::Selected) {
          check(selection != Selection::None, where + ": selected stream without a selection rule");
          check(r.selection_group >= 0 && r.selection_group < num_selection_groups,
                where + ": selection group " + std::to_string(r.selection_group) + " out of range");
        }
        auto source_ok = [&](int source, bool needs_full) {
          if (source < 0) return;
          check(source < layer, where + ": source layer " + std::to_string(source) + " is not below it");
          const StreamRule& s = rules[source * num_kv_heads + head];
          if (needs_full)
            check(s.retention == Retention::Full || s.retention == Retention::Selected,
                  where + ": source layer " + std::to_string(source) + " keeps no distant tokens");
          else check(s.retention != Retention::None, where + ": source layer " + std::to_string(source) + " keeps nothing");
        };
        if (r.retention != Retention::Full) source_ok(r.distant_source, true);
        if (r.retention == Retention::None) {
          check(r.proximal_source >= 0, where + ": keeps nothing and has no proximal source");
          source_ok(r.proximal_source, false);
        }
      }
    }
  };
  check_rules(keys, "keys");
  check_rules(values, "values");
  if (selection != Selection::None) {
    check(budget >= 0, "kv layout: negative selection budget");
    check(observation_window >= 1, "kv layout: the observation window needs at least one query");
    check(pool_kernel >= 1 && pool_kernel % 2 == 1, "kv layout: the pooling kernel must be odd and positive");
  }
  // Distant keys and values of a (layer, head) must come from the same kind of
  // store: both position-indexed, or both from one selection group's slots.
  for (int layer = 0; layer < num_layers; ++layer) {
    for (int head = 0; head < num_kv_heads; ++head) {
      const int kg = distant_group(key_rule(layer, head), keys, head);
      const int vg = distant_group(value_rule(layer, head), values, head);
      check(kg == vg, "kv layout: layer " + std::to_string(layer) + " head " + std::to_string(head) +
                          ": distant keys and values come from different selection groups");
    }
  }
}

int KvLayout::distant_group(const StreamRule& rule, const std::vector<StreamRule>& rules, int head) const {
  if (rule.retention == Retention::Selected) return rule.selection_group;
  if (rule.retention == Retention::Full || rule.distant_source < 0) return -1;
  const StreamRule& source = rules[rule.distant_source * num_kv_heads + head];
  return source.retention == Retention::Selected ? source.selection_group : -1;
}

}  // namespace podkv
