#include "kv_specs.h"

#include <algorithm>

#include "util/error.h"

namespace podkv::cli {

namespace {

bool is_pod_policy(const std::string& p) { return p == "pod" || p == "pod+snapkv"; }

// Settings that apply to each policy (for checks and for results.json).
std::vector<std::string> relevant_settings(const std::string& policy, bool pod_from_file) {
  std::vector<std::string> keys;
  if (is_pod_policy(policy)) {
    if (pod_from_file) keys = {"config"};
    else keys = {"group", "sink", "recent"};
    keys.push_back("tau");
  } else if (policy == "streaming" || policy == "h2o" || policy == "snapkv") {
    keys = {"sink", "recent"};
  } else if (policy != "dense" && policy != "cla") {
    keys = {"sink", "recent", "group", "config", "tau", "budget", "window", "pool"};  // a policy this file does not know
  }
  if (policy == "h2o" || policy == "snapkv" || policy == "pod+snapkv") keys.push_back("budget");
  if (policy == "snapkv" || policy == "pod+snapkv") keys.insert(keys.end(), {"window", "pool"});
  keys.push_back("dtype");  // every policy
  return keys;
}

int64_t parse_int(const std::string& key, const std::string& value, const std::string& label) {
  try {
    size_t used = 0;
    const long long v = std::stoll(value, &used);
    if (used == value.size()) return v;
  } catch (const std::exception&) {
  }
  throw Error("--kv: " + key + "=" + value + " in '" + label + "' is not an integer");
}

}  // namespace

NamedPolicy resolve_policy(const eval::PolicySpec& spec, const KvOptions& shared, const ModelConfig& c,
                           const std::string& model_path) {
  KvOptions kv = shared;
  kv.policy = spec.policy;
  bool group_given = false;
  for (const auto& [key, value] : spec.settings) {
    if (key == "sink") kv.sink = parse_int(key, value, spec.label);
    else if (key == "recent") kv.recent = parse_int(key, value, spec.label);
    else if (key == "group") kv.pod_group = static_cast<int>(parse_int(key, value, spec.label)), kv.pod_config.clear(), group_given = true;
    else if (key == "config") kv.pod_config = value, kv.pod_group = 0;
    else if (key == "budget") kv.budget = parse_int(key, value, spec.label);
    else if (key == "window") kv.window = parse_int(key, value, spec.label);
    else if (key == "pool") kv.pool = parse_int(key, value, spec.label);
    else if (key == "dtype") parse_kv_dtype(value), kv.kv_dtype = value;
    else if (key == "tau") {
      size_t used = 0;
      try {
        kv.tau = std::stof(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != value.size() || !(kv.tau >= 0 && kv.tau <= 1))
        throw Error("--kv: tau=" + value + " in '" + spec.label + "' is not a number in [0, 1]");
    }
  }
  if (group_given && kv.pod_group < 1) throw Error("--kv: group in '" + spec.label + "' must be at least 1");
  if (kv.sink < 0 || kv.sink > (int64_t{1} << 30) || kv.recent < 0 || kv.recent > (int64_t{1} << 30))
    throw Error("--kv: sink and recent in '" + spec.label + "' must be in 0..2^30");
  const bool pod_from_file = is_pod_policy(spec.policy) && kv.pod_group == 0;
  const std::vector<std::string> relevant = relevant_settings(spec.policy, pod_from_file);
  for (const auto& [key, value] : spec.settings)
    if (std::find(relevant.begin(), relevant.end(), key) == relevant.end())
      throw Error("--kv: '" + key + "' does not apply to " + spec.policy + " in '" + spec.label + "'");
  if (!is_pod_policy(spec.policy)) kv.pod_config.clear(), kv.pod_group = 0, kv.tau = -1;  // shared PoD options

  NamedPolicy p;
  p.label = spec.label;
  std::optional<float> tau;
  p.layout = kv_layout_from_options(kv, c, model_path, &tau);
  p.tau = tau;
  p.options = {{"policy", spec.policy}};
  for (const std::string& key : relevant) {
    if (key == "sink") p.options["sink"] = kv.sink;
    else if (key == "recent") p.options["recent"] = kv.recent;
    else if (key == "group") p.options["group"] = kv.pod_group;
    else if (key == "config") p.options["config"] = kv.pod_config.empty() ? "pod.json of the model" : kv.pod_config;
    else if (key == "tau") p.options["tau"] = tau ? nlohmann::json(*tau) : nlohmann::json();
    else if (key == "budget") p.options["budget"] = kv.budget;
    else if (key == "window") p.options["window"] = kv.window;
    else if (key == "pool") p.options["pool"] = kv.pool;
    else if (key == "dtype" && !kv.kv_dtype.empty()) p.options["dtype"] = kv.kv_dtype;
  }
  p.kv_dtype = kv.kv_dtype;
  if (pod_from_file) p.options["sink"] = p.layout.sink_tokens, p.options["recent"] = p.layout.recent_tokens;
  return p;
}


std::vector<NamedPolicy> resolve_policies(const std::vector<std::string>& lists, const KvOptions& shared,
                                          const ModelConfig& config, const std::string& model_path) {
  std::vector<NamedPolicy> policies;
  for (const eval::PolicySpec& spec : eval::parse_policy_specs(lists))
    policies.push_back(resolve_policy(spec, shared, config, model_path));
  return policies;
}

}  // namespace podkv::cli
