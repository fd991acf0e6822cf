#include "kv/pod_config.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv {

namespace {

using nlohmann::json;

const char* const kKnownFields[] = {"sink_tokens", "recent_tokens", "anchors", "tau",
                                    "share_values"};

// A short description of a JSON value for "expected X, got Y" messages.
std::string describe(const json& v) {
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  if (v.is_null()) return "null";
  return std::string(v.type_name()) + " " + text;
}

int as_int(const json& v, const std::string& where) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    check(u <= static_cast<uint64_t>(INT_MAX),
          where + ": " + std::to_string(u) + " is out of range");
    return static_cast<int>(u);
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    check(i >= INT_MIN && i <= INT_MAX, where + ": " + std::to_string(i) + " is out of range");
    return static_cast<int>(i);
  }
  throw Error(where + ": expected an integer, got " + describe(v));
}

const json& required(const json& j, const char* field, const std::string& source) {
  auto it = j.find(field);
  check(it != j.end(), source + ": " + field + ": missing (required field)");
  return *it;
}

// The double whose shortest decimal form equals the float's, so tau 0.7f is
// written as 0.7 rather than 0.699999988079071.
double float_as_short_double(float f) {
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof(buf), f);
  *result.ptr = '\0';
  return std::strtod(buf, nullptr);
}

std::string int_list(const std::vector<int>& values) {
  std::string text = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) text += ", ";
    text += std::to_string(values[i]);
  }
  return text + "]";
}

}  // namespace

void validate_pod_config(const PodConfig& cfg, const std::string& source_name, int num_layers,
                         int num_kv_heads) {
  const std::string& src = source_name;
  check(num_layers >= 1,
        src + ": the model must have at least one layer (got " + std::to_string(num_layers) + ")");
  check(num_kv_heads >= 1, src + ": the model must have at least one KV head (got " +
                               std::to_string(num_kv_heads) + ")");
  check(cfg.sink_tokens >= 0,
        src + ": sink_tokens: must be >= 0 (got " + std::to_string(cfg.sink_tokens) + ")");
  check(cfg.recent_tokens >= 1,
        src + ": recent_tokens: must be >= 1 (got " + std::to_string(cfg.recent_tokens) + ")");
  if (cfg.tau) {
    float tau = *cfg.tau;
    check(std::isfinite(tau) && tau >= 0.0f && tau <= 1.0f,
          src + ": tau: must be in [0, 1] or null (got " + std::to_string(tau) + ")");
  }
  check(static_cast<int64_t>(cfg.anchors.size()) == num_kv_heads,
        src + ": anchors has " + std::to_string(cfg.anchors.size()) + " lists but the model has " +
            std::to_string(num_kv_heads) + " KV heads");
  for (size_t h = 0; h < cfg.anchors.size(); ++h) {
    const std::vector<int>& list = cfg.anchors[h];
    const std::string field = src + ": anchors[" + std::to_string(h) + "]";
    check(!list.empty(), field + ": empty (the first block must start at layer 0)");
    check(list[0] == 0, field + ": first anchor is " + std::to_string(list[0]) + ", must be 0");
    for (size_t i = 1; i < list.size(); ++i) {
      check(list[i] > list[i - 1], field + ": not increasing at position " + std::to_string(i) +
                                       " (" + std::to_string(list[i]) + " after " +
                                       std::to_string(list[i - 1]) + ")");
      check(list[i] < num_layers, field + ": layer " + std::to_string(list[i]) +
                                      " does not exist (model has " + std::to_string(num_layers) +
                                      " layers)");
    }
  }
}

PodConfig parse_pod_config(const json& j, const std::string& source_name, int num_layers,
                           int num_kv_heads) {
  const std::string& src = source_name;
  check(j.is_object(), src + ": expected a JSON object at the top level, got " + describe(j));
  PodConfig cfg;
  cfg.sink_tokens = as_int(required(j, "sink_tokens", src), src + ": sink_tokens");
  cfg.recent_tokens = as_int(required(j, "recent_tokens", src), src + ": recent_tokens");

  const json& anchors = required(j, "anchors", src);
  check(anchors.is_array(),
        src + ": anchors: expected an array of lists (one per KV head), got " + describe(anchors));
  for (size_t h = 0; h < anchors.size(); ++h) {
    const json& list = anchors[h];
    const std::string field = src + ": anchors[" + std::to_string(h) + "]";
    check(list.is_array(), field + ": expected a list of layers, got " + describe(list));
    std::vector<int> layers;
    layers.reserve(list.size());
    for (size_t i = 0; i < list.size(); ++i)
      layers.push_back(as_int(list[i], field + "[" + std::to_string(i) + "]"));
    cfg.anchors.push_back(std::move(layers));
  }

  if (auto it = j.find("tau"); it != j.end() && !it->is_null()) {
    check(it->is_number(), src + ": tau: expected a number or null, got " + describe(*it));
    double tau = it->get<double>();
    check(tau >= 0.0 && tau <= 1.0,
          src + ": tau: must be in [0, 1] or null (got " + it->dump() + ")");
    cfg.tau = static_cast<float>(tau);
  }
  if (auto it = j.find("share_values"); it != j.end()) {
    check(it->is_boolean(), src + ": share_values: expected true or false, got " + describe(*it));
    cfg.share_values = it->get<bool>();
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = std::find_if(std::begin(kKnownFields), std::end(kKnownFields), [&](const char* k) {
                   return it.key() == k;
                 }) != std::end(kKnownFields);
    if (!known) cfg.extra[it.key()] = it.value();
  }
  validate_pod_config(cfg, src, num_layers, num_kv_heads);
  return cfg;
}

PodConfig load_pod_config(const std::string& path, int num_layers, int num_kv_heads) {
  // A pod.json holds one anchor list per KV head: a few bytes per (layer, head)
  // and the analysis settings. The size is checked before parsing, so a huge
  // file is one error instead of gigabytes of JSON values.
  const size_t limit = (size_t{1} << 20) + size_t{64} * static_cast<size_t>(std::max(num_layers, 1)) *
                                                static_cast<size_t>(std::max(num_kv_heads, 1));
  const std::string text = read_file_bounded(path, limit);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e400
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    throw Error(path + ": invalid JSON: " + what);
  }
  return parse_pod_config(j, path, num_layers, num_kv_heads);
}

json to_json(const PodConfig& cfg) {
  json j = cfg.extra.is_object() ? cfg.extra : json::object();
  j["sink_tokens"] = cfg.sink_tokens;
  j["recent_tokens"] = cfg.recent_tokens;
  j["anchors"] = cfg.anchors;
  j["tau"] = cfg.tau ? json(float_as_short_double(*cfg.tau)) : json(nullptr);
  j["share_values"] = cfg.share_values;
  return j;
}

void save_pod_config(const std::string& path, const PodConfig& cfg) {
  check(!cfg.anchors.empty(), path + ": anchors: empty (need one list per KV head)");
  // The layer count is unknown here: INT_MAX lets every other rule be checked.
  validate_pod_config(cfg, path, INT_MAX, static_cast<int>(cfg.anchors.size()));

  // Known fields first in the documented order, one anchor list per line, then
  // the extra fields (each on one line) in key order.
  json j = to_json(cfg);
  std::string text = "{\n";
  text += "  \"sink_tokens\": " + j["sink_tokens"].dump() + ",\n";
  text += "  \"recent_tokens\": " + j["recent_tokens"].dump() + ",\n";
  text += "  \"anchors\": [\n";
  for (size_t h = 0; h < cfg.anchors.size(); ++h)
    text += "    " + int_list(cfg.anchors[h]) + (h + 1 < cfg.anchors.size() ? ",\n" : "\n");
  text += "  ],\n";
  text += "  \"tau\": " + j["tau"].dump() + ",\n";
  text += "  \"share_values\": " + j["share_values"].dump();
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = std::find_if(std::begin(kKnownFields), std::end(kKnownFields), [&](const char* k) {
                   return it.key() == k;
                 }) != std::end(kKnownFields);
    if (!known) text += ",\n  " + json(it.key()).dump() + ": " + it.value().dump();
  }
  text += "\n}\n";

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    check(out.good(), tmp + ": cannot open for writing: " + std::strerror(errno));
    out << text;
    out.flush();
    if (!out.good()) {
      std::remove(tmp.c_str());
      throw Error(tmp + ": write failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename " + tmp + " onto it: " + reason);
  }
}

PodConfig uniform_pod_config(int num_layers, int num_kv_heads, int group_size, int sink_tokens,
                             int recent_tokens) {
  check(group_size >= 1,
        "uniform_pod_config: group_size must be >= 1 (got " + std::to_string(group_size) + ")");
  PodConfig cfg;
  cfg.sink_tokens = sink_tokens;
  cfg.recent_tokens = recent_tokens;
  std::vector<int> anchors;
  for (int l = 0; l < num_layers; l += group_size) anchors.push_back(l);
  cfg.anchors.assign(num_kv_heads > 0 ? num_kv_heads : 0, anchors);
  validate_pod_config(cfg, "uniform_pod_config", num_layers, num_kv_heads);
  return cfg;
}

int anchor_of(const PodConfig& cfg, int layer, int kv_head) {
  // Messages are built only on failure: this may run per step.
  if (kv_head < 0 || static_cast<size_t>(kv_head) >= cfg.anchors.size())
    throw Error("anchor_of: kv_head " + std::to_string(kv_head) + " out of range (config has " +
                std::to_string(cfg.anchors.size()) + " KV heads)");
  if (layer < 0) throw Error("anchor_of: layer " + std::to_string(layer) + " is negative");
  const std::vector<int>& list = cfg.anchors[kv_head];
  // The anchor is the largest anchor <= layer.
  auto it = std::upper_bound(list.begin(), list.end(), layer);
  if (it == list.begin())
    throw Error("anchor_of: anchors[" + std::to_string(kv_head) + "] does not start at layer 0");
  return *(it - 1);
}

bool is_dense(const PodConfig& cfg, int num_layers) {
  for (const std::vector<int>& list : cfg.anchors)
    if (static_cast<int>(list.size()) != num_layers) return false;
  return true;
}

PodLayout::PodLayout(const PodConfig& cfg, int num_layers, int num_kv_heads)
    : num_layers_(num_layers), num_kv_heads_(num_kv_heads), anchors_(cfg.anchors) {
  validate_pod_config(cfg, "pod config", num_layers, num_kv_heads);
  const size_t cells = static_cast<size_t>(num_layers) * num_kv_heads;
  anchor_.resize(cells);
  block_.resize(cells);
  for (int h = 0; h < num_kv_heads; ++h) {
    const std::vector<int>& list = anchors_[h];
    total_blocks_ += static_cast<int>(list.size());
    int block = 0;
    for (int l = 0; l < num_layers; ++l) {
      if (block + 1 < static_cast<int>(list.size()) && list[block + 1] == l) ++block;
      anchor_[static_cast<size_t>(h) * num_layers + l] = list[block];
      block_[static_cast<size_t>(h) * num_layers + l] = block;
    }
  }
}

const std::vector<int>& PodLayout::anchors(int kv_head) const {
  if (kv_head < 0 || kv_head >= num_kv_heads_)
    throw Error("PodLayout: kv_head " + std::to_string(kv_head) + " out of range (model has " +
                std::to_string(num_kv_heads_) + " KV heads)");
  return anchors_[kv_head];
}

double PodLayout::average_block_length() const {
  return static_cast<double>(num_layers_) * num_kv_heads_ / total_blocks_;
}

size_t PodLayout::index(int layer, int kv_head) const {
  // Hot path: build the message only on failure.
  if (layer < 0 || layer >= num_layers_ || kv_head < 0 || kv_head >= num_kv_heads_)
    throw Error("PodLayout: (layer " + std::to_string(layer) + ", kv_head " +
                std::to_string(kv_head) + ") out of range (model has " +
                std::to_string(num_layers_) + " layers, " + std::to_string(num_kv_heads_) +
                " KV heads)");
  return static_cast<size_t>(kv_head) * num_layers_ + layer;
}

}  // namespace podkv
