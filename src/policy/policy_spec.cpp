#include "policy/policy_spec.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>
#include <sstream>

#include "model/model.h"
#include "util/error.h"

namespace podkv {

namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string part;
  std::stringstream in(s);
  while (std::getline(in, part, sep)) parts.push_back(trim(part));
  if (!s.empty() && s.back() == sep) parts.push_back("");
  return parts;
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

// model=DIR must be a model of the command's shape: the same inputs, caches and logits.
void check_policy_model(const std::string& path, const ModelConfig& c, const std::string& what) {
  if (!std::filesystem::exists(path)) throw Error(what + ": no such model directory or file");
  ModelConfig other;
  try {
    other = Model::load_config(path);
  } catch (const std::exception& e) {
    throw Error(what + ": " + e.what());
  }
  ShapeDifference d = shape_difference(other, c);
  if (d.field == nullptr && other.max_position_embeddings != c.max_position_embeddings)
    d = {"max_position_embeddings", other.max_position_embeddings, c.max_position_embeddings};
  if (d.field != nullptr)
    throw Error(what + " has " + d.field + " " + std::to_string(d.a) + ", the model of -m " + std::to_string(d.b) +
                ": a policy's model must have the same shape");
}

}  // namespace

const char* known_policy_settings() {
  return "sink, recent, group, config, tau, budget, window, pool, dtype, model, name";
}

std::vector<PolicySpec> parse_policy_specs(const std::vector<std::string>& lists) {
  static const std::set<std::string> known = {"sink",   "recent", "group", "config", "tau", "budget",
                                              "window", "pool",   "dtype", "model",  "name"};
  std::vector<PolicySpec> specs;
  std::set<std::string> labels;
  for (const std::string& list : lists) {
    for (const std::string& text : split(list, ',')) {
      if (text.empty()) throw Error("--kv: empty policy in '" + list + "'");
      const std::vector<std::string> parts = split(text, ':');
      PolicySpec spec;
      spec.label = text;
      spec.policy = parts[0];
      if (spec.policy.empty()) throw Error("--kv: '" + text + "' has no policy name before ':'");
      std::set<std::string> seen;
      for (size_t i = 1; i < parts.size(); ++i) {
        const size_t eq = parts[i].find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == parts[i].size())
          throw Error("--kv: '" + parts[i] + "' in '" + text + "' is not KEY=VALUE");
        const std::string key = trim(parts[i].substr(0, eq)), value = trim(parts[i].substr(eq + 1));
        if (!known.count(key))
          throw Error("--kv: unknown setting '" + key + "' in '" + text + "' (known: " + known_policy_settings() + ")");
        if (!seen.insert(key).second) throw Error("--kv: '" + key + "' is given twice in '" + text + "'");
        if (key == "name") {  // the label in reports, instead of the spec as written (a table cell)
          if (std::any_of(value.begin(), value.end(), [](char ch) { return ch == '|' || std::iscntrl(static_cast<unsigned char>(ch)); }))
            throw Error("--kv: name=" + value + " in '" + text + "' may not hold '|' or control characters");
          spec.label = value;
        }
        else spec.settings.emplace_back(key, value);
      }
      if (!labels.insert(spec.label).second) throw Error("--kv: '" + spec.label + "' is given twice");
      specs.push_back(std::move(spec));
    }
  }
  if (specs.empty()) throw Error("--kv: give at least one policy");
  return specs;
}

NamedPolicy resolve_policy(const PolicySpec& spec, const KvOptions& shared, const ModelConfig& c,
                           const std::string& model_path) {
  KvOptions kv = shared;
  kv.policy = spec.policy;
  bool group_given = false;
  std::string weights;  // model=DIR: this policy's own weights
  for (const auto& [key, value] : spec.settings) {
    if (key == "model") {
      check_policy_model(value, c, "--kv: model=" + value + " in '" + spec.label + "'");
      weights = value;
    }
    else if (key == "sink") kv.sink = parse_int(key, value, spec.label);
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
  const std::vector<std::string> relevant = policy_settings(spec.policy, pod_from_file);
  for (const auto& [key, value] : spec.settings)
    if (key != "model" && std::find(relevant.begin(), relevant.end(), key) == relevant.end())
      throw Error("--kv: '" + key + "' does not apply to " + spec.policy + " in '" + spec.label + "'");
  if (!is_pod_policy(spec.policy)) kv.pod_config.clear(), kv.pod_group = 0, kv.tau = -1;  // shared PoD options

  NamedPolicy p;
  p.label = spec.label;
  std::optional<float> tau;
  // The default pod.json is the one beside the weights the policy runs.
  p.layout = kv_layout_from_options(kv, c, weights.empty() ? model_path : weights, &tau);
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
  if (!weights.empty()) p.options["model"] = weights;
  if (pod_from_file) p.options["sink"] = p.layout.sink_tokens, p.options["recent"] = p.layout.recent_tokens;
  return p;
}

std::vector<NamedPolicy> resolve_policies(const std::vector<std::string>& lists, const KvOptions& shared,
                                          const ModelConfig& config, const std::string& model_path) {
  std::vector<NamedPolicy> policies;
  for (const PolicySpec& spec : parse_policy_specs(lists))
    policies.push_back(resolve_policy(spec, shared, config, model_path));
  return policies;
}

}  // namespace podkv
