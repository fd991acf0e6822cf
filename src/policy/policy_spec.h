// The --kv list of podkv eval and memory: policies separated by commas, each a
// policy name with optional settings after colons, e.g.
//   dense,pod:group=2,streaming:sink=4:recent=64,snapkv:budget=256
// Settings not given come from the shared options (--sink, --recent, ...).
// The spec as written is the method's label in the report, unless it has
// name=LABEL. model=DIR (podkv eval) runs the policy with another model's
// weights of the same shape, e.g. pod:model=models/podkv-long-pod:name=pod-adapted.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kv/kv_layout.h"
#include "model/config.h"
#include "policy/kv_options.h"

namespace podkv {

struct PolicySpec {
  std::string label;   // as written ("streaming:recent=64"), or its name=
  std::string policy;  // "streaming"
  std::vector<std::pair<std::string, std::string>> settings;  // {"recent", "64"}, in order
};

// Settings a spec may carry: "sink, recent, group, config, tau, budget, window, pool, dtype, model, name".
const char* known_policy_settings();

// Parses every entry of `lists` (each may hold several specs joined by
// commas). Throws Error naming --kv for an empty list, a malformed or unknown
// setting, or a label given twice.
std::vector<PolicySpec> parse_policy_specs(const std::vector<std::string>& lists);

// A spec resolved for one model.
struct NamedPolicy {
  std::string label;        // as written: "pod:group=2"
  KvLayout layout;
  std::optional<float> tau;  // PoD skipping threshold
  nlohmann::json options;   // every setting that applies to the policy ("model": model=DIR, the weights it runs)
  std::string kv_dtype;     // KV entry type (dtype=...; or --kv-dtype); empty = the command's default
};

// Settings of `spec` override `shared`; a setting that does not apply to the
// policy (policy_settings) is an error naming --kv. The default pod.json is
// looked for beside model=DIR when the spec has it, else beside `model_path`.
NamedPolicy resolve_policy(const PolicySpec& spec, const KvOptions& shared, const ModelConfig& config,
                           const std::string& model_path);

// parse_policy_specs + resolve_policy for each.
std::vector<NamedPolicy> resolve_policies(const std::vector<std::string>& lists, const KvOptions& shared,
                                          const ModelConfig& config, const std::string& model_path);

}  // namespace podkv
