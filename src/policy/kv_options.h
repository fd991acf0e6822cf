// The KV-cache options as a user gives them (--kv, --pod-config, --sink, ...,
// --kv-dtype), and what they resolve to for one model: where its pod.json is,
// which settings apply to which policy, tau, the KV entry type and the
// KvLayout. The CLI binds these fields to its flags; eval and memory take a
// list of policies, each with its own settings (policy/policy_spec.h).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "kv/kv_entry.h"
#include "kv/kv_layout.h"
#include "model/config.h"
#include "model/model.h"

namespace podkv {

struct KvOptions {
  std::string policy = "dense";
  std::string pod_config;      // pod.json (default: MODEL/pod.json when present)
  int pod_group = 0;           // uniform PoD blocks of G layers instead of a pod.json
  int64_t sink = 16;           // streaming, and --pod-group
  int64_t recent = 256;        // streaming, and --pod-group
  float tau = -1;              // PoD skipping threshold; < 0 = the pod.json's (or never)
  int64_t budget = 1024;       // h2o, snapkv, pod+snapkv: distant tokens kept per (block,) head
  int64_t window = 32;         // snapkv, pod+snapkv: observation window (last prompt queries)
  int64_t pool = 7;            // snapkv, pod+snapkv: max-pooling kernel over key positions
  std::string kv_dtype;        // f32, f16, bf16, q8_0; empty = the model's own float type
};

// pod and pod+snapkv: the policies that read a layer grouping (pod.json or --pod-group).
bool is_pod_policy(const std::string& policy);

// The settings of a policy list spec (policy/policy_spec.h) that apply to
// `policy`, in report order; `pod_from_file`: the PoD grouping comes from a
// pod.json (which carries its own sink and recent) rather than a group size.
std::vector<std::string> policy_settings(const std::string& policy, bool pod_from_file);

// The pod.json of a model when none is given: MODEL/pod.json for a model
// directory, the pod.json beside a model file. Throws Error naming --kv
// `policy` when there is none.
std::string find_pod_config(const std::string& model_path, const std::string& policy);

// The layout the options name for this model; errors name the option. `tau`
// gets the PoD skipping threshold (--tau, else the pod.json's; absent = never).
KvLayout kv_layout_from_options(const KvOptions& o, const ModelConfig& config, const std::string& model_path,
                                std::optional<float>* tau = nullptr);

// The KV entry type of --kv-dtype for this model (default: its own float type).
KvDType kv_dtype_from_options(const KvOptions& o, const Model& model);

}  // namespace podkv
