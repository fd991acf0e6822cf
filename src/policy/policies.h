// KV-cache policies behind one interface: each names a KvLayout (what is kept
// and where the rest is read from). One flag picks the policy.
//   dense      every key and value of every token
//   pod        PoD: distant keys only at each block's anchor (pod.json)
//   streaming  StreamingLLM: sink + recent window, distant tokens dropped
//   cla        cross-layer attention: odd layers use the K and V of the layer below
//   h2o        heavy hitters: sink + recent window + the `budget` distant tokens
//              with the most accumulated attention, per layer and KV head
//   snapkv     sink + recent window + the `budget` distant tokens most attended
//              by the last `window` prompt queries (max-pooled), chosen at the
//              end of prefill, per layer and KV head
//   pod+snapkv PoD, with SnapKV's choice made per (block, KV head) from the
//              attention of all the block's layers: the anchor's distant keys and
//              every layer's distant values keep the same `budget` tokens
// The options as the user gives them (policy/kv_options.h: pod.json found and
// loaded, settings checked per policy) resolve to KvPolicyOptions and then to
// a layout here.
#pragma once

#include <optional>
#include <string>

#include "kv/kv_layout.h"
#include "kv/pod_config.h"
#include "model/config.h"

namespace podkv {

struct KvPolicyOptions {
  std::string policy = "dense";
  std::optional<PodConfig> pod;  // for pod: the grouping (sink/recent are taken from it)
  int64_t sink_tokens = 16;      // for streaming
  int64_t recent_tokens = 256;   // for streaming, h2o, snapkv
  int64_t budget = 1024;         // h2o, snapkv, pod+snapkv: distant tokens kept per group
  int64_t observation_window = 32;  // snapkv, pod+snapkv
  int64_t pool_kernel = 7;          // snapkv, pod+snapkv
};

// Known policy names, for messages.
const char* known_kv_policies();

// The layout of `options.policy` for the model; throws Error naming --kv for
// an unknown policy or a missing pod config.
KvLayout make_kv_layout(const ModelConfig& config, const KvPolicyOptions& options);

KvLayout pod_kv_layout(const ModelConfig& config, const PodConfig& pod);

}  // namespace podkv
