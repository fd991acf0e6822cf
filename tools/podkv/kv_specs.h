// Policies named on the command line as a list: "dense,pod:group=2,
// streaming:recent=64" (src/eval/policy_spec.h), each resolved against the
// shared KV options (--sink, --recent, --budget, ...) into a layout. Used by
// eval and memory.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common.h"
#include "policy/policy_spec.h"

namespace podkv::cli {

struct NamedPolicy {
  std::string label;        // as written: "pod:group=2"
  KvLayout layout;
  std::optional<float> tau;  // PoD skipping threshold
  nlohmann::json options;   // every setting that applies to the policy
  std::string kv_dtype;     // KV entry type (dtype=...; or --kv-dtype); empty = the command's default
};

// Settings of `spec` override `shared`; a setting that does not apply to the
// policy is an error naming --kv.
NamedPolicy resolve_policy(const eval::PolicySpec& spec, const KvOptions& shared, const ModelConfig& config,
                           const std::string& model_path);

std::vector<NamedPolicy> resolve_policies(const std::vector<std::string>& lists, const KvOptions& shared,
                                          const ModelConfig& config, const std::string& model_path);

}  // namespace podkv::cli
