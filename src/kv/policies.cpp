#include "kv/policies.h"

#include "util/error.h"

namespace podkv {

const char* known_kv_policies() { return "dense, pod, streaming, cla"; }

KvLayout pod_kv_layout(const ModelConfig& c, const PodConfig& pod) {
  PodLayout blocks(pod, c.num_layers, c.num_kv_heads);
  KvLayout layout = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
  layout.policy = "pod";
  layout.sink_tokens = pod.sink_tokens;
  layout.recent_tokens = pod.recent_tokens;
  for (int l = 0; l < c.num_layers; ++l) {
    for (int h = 0; h < c.num_kv_heads; ++h) {
      const int anchor = blocks.anchor(l, h);
      if (anchor == l) continue;
      layout.keys[l * c.num_kv_heads + h] = StreamRule{Retention::Window, anchor, -1};
      if (pod.share_values) layout.values[l * c.num_kv_heads + h] = StreamRule{Retention::Window, anchor, -1};
    }
  }
  layout.validate();
  return layout;
}

KvLayout make_kv_layout(const ModelConfig& c, const KvPolicyOptions& o) {
  KvLayout layout = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
  if (o.policy == "dense") return layout;
  if (o.policy == "pod") {
    if (!o.pod) throw Error("--kv pod needs a grouping: give --pod-config pod.json (or --pod-group G)");
    return pod_kv_layout(c, *o.pod);
  }
  if (o.policy == "streaming") {
    if (o.recent_tokens < 1) throw Error("--recent: the streaming window needs at least one recent token");
    if (o.sink_tokens < 0) throw Error("--sink: must not be negative");
    layout.policy = "streaming";
    layout.sink_tokens = o.sink_tokens;
    layout.recent_tokens = o.recent_tokens;
    for (auto* rules : {&layout.keys, &layout.values})
      for (StreamRule& r : *rules) r = StreamRule{Retention::Window, -1, -1};
    layout.validate();
    return layout;
  }
  if (o.policy == "cla") {
    layout.policy = "cla";
    for (int l = 1; l < c.num_layers; l += 2) {
      for (int h = 0; h < c.num_kv_heads; ++h) {
        const StreamRule shared{Retention::None, l - 1, l - 1};
        layout.keys[l * c.num_kv_heads + h] = shared;
        layout.values[l * c.num_kv_heads + h] = shared;
      }
    }
    layout.validate();
    return layout;
  }
  throw Error("--kv: unknown policy '" + o.policy + "' (known: " + known_kv_policies() + ")");
}

}  // namespace podkv
