// The --kv list of podkv eval: policies separated by commas, each a policy
// name with optional settings after colons, e.g.
//   dense,pod:group=2,streaming:sink=4:recent=64,snapkv:budget=256
// Settings not given come from the shared options (--sink, --recent, ...).
// The spec as written is the method's label in the report.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace podkv::eval {

struct PolicySpec {
  std::string label;   // as written: "streaming:recent=64"
  std::string policy;  // "streaming"
  std::vector<std::pair<std::string, std::string>> settings;  // {"recent", "64"}, in order
};

// Settings a spec may carry: "sink, recent, group, config, tau, budget, window, pool, dtype".
const char* known_policy_settings();

// Parses every entry of `lists` (each may hold several specs joined by
// commas). Throws Error naming --kv for an empty list, a malformed or unknown
// setting, or a label given twice.
std::vector<PolicySpec> parse_policy_specs(const std::vector<std::string>& lists);

}  // namespace podkv::eval
