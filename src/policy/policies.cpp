#include "policy/policies.h"

#include "util/error.h"

namespace podkv {

const char* known_kv_policies() { return "dense, pod, streaming, h2o, snapkv, cla, pod+snapkv"; }

namespace {

void check_window(const KvPolicyOptions& o) {
  if (o.recent_tokens < 1) throw Error("--recent: --kv " + o.policy + " needs at least one recent token");
  if (o.sink_tokens < 0) throw Error("--sink: must not be negative");
}

void set_selection(KvLayout& layout, const KvPolicyOptions& o, Selection selection) {
  if (o.budget < 0) throw Error("--budget: must not be negative, got " + std::to_string(o.budget));
  if (selection == Selection::SnapKV) {
    if (o.observation_window < 1) throw Error("--window: the observation window needs at least one query");
    if (o.pool_kernel < 1 || o.pool_kernel % 2 == 0)
      throw Error("--pool: the pooling kernel must be odd and positive, got " + std::to_string(o.pool_kernel));
  }
  layout.selection = selection;
  layout.budget = o.budget;
  layout.observation_window = o.observation_window;
  layout.pool_kernel = o.pool_kernel;
}

// H2O and SnapKV: every stream keeps its window and its own selection, one
// group per (layer, KV head) holding that layer's K and V.
KvLayout token_selection_layout(const ModelConfig& c, const KvPolicyOptions& o, Selection selection) {
  check_window(o);
  KvLayout layout = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
  layout.policy = o.policy;
  layout.sink_tokens = o.sink_tokens;
  layout.recent_tokens = o.recent_tokens;
  set_selection(layout, o, selection);
  layout.num_selection_groups = c.num_layers * c.num_kv_heads;
  for (int i = 0; i < layout.num_selection_groups; ++i) {
    layout.keys[i] = StreamRule{Retention::Selected, -1, -1, i};
    layout.values[i] = StreamRule{Retention::Selected, -1, -1, i};
  }
  layout.validate();
  return layout;
}

// PoD + SnapKV: one group per (block, KV head): the anchor's keys and the
// values of every layer of the block (the anchor's values alone with share_values).
KvLayout pod_snapkv_layout(const ModelConfig& c, const PodConfig& pod, const KvPolicyOptions& o) {
  KvLayout layout = pod_kv_layout(c, pod);
  layout.policy = "pod+snapkv";
  set_selection(layout, o, Selection::SnapKV);
  PodLayout blocks(pod, c.num_layers, c.num_kv_heads);
  std::vector<int> group_of_anchor(static_cast<size_t>(c.num_layers) * c.num_kv_heads, -1);
  int groups = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    for (int h = 0; h < c.num_kv_heads; ++h) {
      const int anchor = blocks.anchor(l, h);
      const size_t i = static_cast<size_t>(l) * c.num_kv_heads + h;
      int& group = group_of_anchor[static_cast<size_t>(anchor) * c.num_kv_heads + h];
      if (group < 0) group = groups++;
      if (anchor == l) layout.keys[i] = StreamRule{Retention::Selected, -1, -1, group};
      if (anchor == l || !pod.share_values) layout.values[i] = StreamRule{Retention::Selected, -1, -1, group};
    }
  }
  layout.num_selection_groups = groups;
  layout.validate();
  return layout;
}

}  // namespace

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
  if (o.policy == "pod+snapkv") {
    if (!o.pod) throw Error("--kv pod+snapkv needs a grouping: give --pod-config pod.json (or --pod-group G)");
    return pod_snapkv_layout(c, *o.pod, o);
  }
  if (o.policy == "h2o") return token_selection_layout(c, o, Selection::HeavyHitters);
  if (o.policy == "snapkv") return token_selection_layout(c, o, Selection::SnapKV);
  if (o.policy == "streaming") {
    check_window(o);
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
