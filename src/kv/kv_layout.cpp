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

int64_t KvLayout::retained_tokens(const StreamRule& rule, int64_t length) const {
  switch (rule.retention) {
    case Retention::Full: return length;
    case Retention::None: return 0;
    case Retention::Window: {
      const int64_t sink = std::min(sink_tokens, length);
      // recent = (t - nr, t] with t = length - 1, clipped so it does not overlap the sink.
      const int64_t recent_begin = std::max(sink, length - recent_tokens);
      return sink + (length - recent_begin);
    }
  }
  return 0;
}

int64_t KvLayout::retained_vectors(int64_t length) const {
  int64_t total = 0;
  for (const StreamRule& r : keys) total += retained_tokens(r, length);
  for (const StreamRule& r : values) total += retained_tokens(r, length);
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
        if (r.retention == Retention::Window && recent_tokens < 1)
          throw Error(where + ": a window stream needs at least one recent token");
        auto source_ok = [&](int source, bool needs_full) {
          if (source < 0) return;
          check(source < layer, where + ": source layer " + std::to_string(source) + " is not below it");
          const StreamRule& s = rules[source * num_kv_heads + head];
          if (needs_full) check(s.retention == Retention::Full, where + ": source layer " + std::to_string(source) + " does not keep every token");
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
}

}  // namespace podkv
