#include "policy/policy_spec.h"

#include <set>
#include <sstream>

#include "util/error.h"

namespace podkv::eval {

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

}  // namespace

const char* known_policy_settings() { return "sink, recent, group, config, tau, budget, window, pool, dtype"; }

std::vector<PolicySpec> parse_policy_specs(const std::vector<std::string>& lists) {
  static const std::set<std::string> known = {"sink", "recent", "group", "config", "tau", "budget", "window", "pool", "dtype"};
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
        spec.settings.emplace_back(key, value);
      }
      if (!labels.insert(spec.label).second) throw Error("--kv: '" + spec.label + "' is given twice");
      specs.push_back(std::move(spec));
    }
  }
  if (specs.empty()) throw Error("--kv: give at least one policy");
  return specs;
}

}  // namespace podkv::eval
