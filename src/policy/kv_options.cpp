#include "policy/kv_options.h"

#include <filesystem>

#include "kv/pod_config.h"
#include "policy/policies.h"
#include "util/error.h"

namespace podkv {

namespace fs = std::filesystem;

bool is_pod_policy(const std::string& policy) { return policy == "pod" || policy == "pod+snapkv"; }

std::vector<std::string> policy_settings(const std::string& policy, bool pod_from_file) {
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

std::string find_pod_config(const std::string& model_path, const std::string& policy) {
  const fs::path beside = fs::path(model_path).parent_path() / "pod.json";
  const fs::path inside = fs::path(model_path) / "pod.json";
  if (fs::is_directory(model_path) && fs::exists(inside)) return inside.string();
  if (!fs::is_directory(model_path) && fs::exists(beside)) return beside.string();
  throw Error("--kv " + policy + ": no pod.json beside the model; give --pod-config FILE or --pod-group G");
}

KvLayout kv_layout_from_options(const KvOptions& o, const ModelConfig& c, const std::string& model_path,
                                std::optional<float>* tau) {
  KvPolicyOptions p;
  p.policy = o.policy;
  p.sink_tokens = o.sink;
  p.recent_tokens = o.recent;
  p.budget = o.budget;
  p.observation_window = o.window;
  p.pool_kernel = o.pool;
  const bool pod_policy = is_pod_policy(o.policy);
  if (pod_policy) {
    if (o.pod_group > 0) {
      if (o.recent < 1) throw Error("--recent: PoD needs at least one recent token");
      if (o.sink < 0) throw Error("--sink: must not be negative");
      p.pod = uniform_pod_config(c.num_layers, c.num_kv_heads, o.pod_group, static_cast<int>(o.sink), static_cast<int>(o.recent));
    } else {
      const std::string path = o.pod_config.empty() ? find_pod_config(model_path, o.policy) : o.pod_config;
      p.pod = load_pod_config(path, c.num_layers, c.num_kv_heads);
    }
    if (tau != nullptr) *tau = p.pod->tau;
  } else if (!o.pod_config.empty() || o.pod_group > 0) {
    throw Error("--pod-config/--pod-group need --kv pod or pod+snapkv");
  }
  if (o.tau != -1) {  // given (-1 is "not given")
    if (!pod_policy) throw Error("--tau needs --kv pod or pod+snapkv");
    if (!(o.tau >= 0 && o.tau <= 1)) throw Error("--tau: must be in [0, 1], got " + std::to_string(o.tau));
    if (tau != nullptr) *tau = o.tau;
  }
  return make_kv_layout(c, p);
}

KvDType kv_dtype_from_options(const KvOptions& o, const Model& model) {
  return kv_dtype_or_default(o.kv_dtype, model.weight_dtype());
}

}  // namespace podkv
