#include "prompts_file.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace podkv::cli {

namespace {

constexpr size_t kMaxFileBytes = size_t{1} << 30;  // 1 GiB of prompts is far past any sane batch job

double number(const nlohmann::json& j, const std::string& where, const char* key) {
  if (!j.is_number()) throw Error(where + ": \"" + key + "\" must be a number");
  return j.get<double>();
}

int64_t integer(const nlohmann::json& j, const std::string& where, const char* key, int64_t lo, int64_t hi) {
  if (!j.is_number_integer() && !j.is_number_unsigned()) throw Error(where + ": \"" + key + "\" must be an integer");
  const int64_t v = j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX
                                                                                                      : j.get<int64_t>();
  if (v < lo || v > hi)
    throw Error(where + ": \"" + key + "\" must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                std::to_string(v));
  return v;
}

GenerateRequest parse_line(const nlohmann::json& j, const std::string& where, const Tokenizer* tokenizer,
                           const ModelConfig& config, const GenerateOptions& defaults, int64_t context, bool no_bos) {
  if (!j.is_object()) throw Error(where + ": expected a JSON object");
  GenerateRequest r;
  r.options = defaults;
  int64_t n_predict = defaults.max_new_tokens;
  const bool has_prompt = j.contains("prompt"), has_ids = j.contains("ids");
  if (has_prompt == has_ids) throw Error(where + ": give exactly one of \"prompt\" (text) and \"ids\" (token ids)");
  for (const auto& [key, value] : j.items()) {
    if (key == "prompt") {
      if (!value.is_string()) throw Error(where + ": \"prompt\" must be a string");
      if (tokenizer == nullptr) throw Error(where + ": the model has no tokenizer; give \"ids\" instead of \"prompt\"");
      r.prompt_ids = tokenizer->encode(value.get<std::string>(), !no_bos);
    } else if (key == "ids") {
      if (!value.is_array() || value.empty()) throw Error(where + ": \"ids\" must be a non-empty array of token ids");
      for (const auto& id : value) r.prompt_ids.push_back(static_cast<int32_t>(integer(id, where, "ids", 0, config.vocab_size - 1)));
    } else if (key == "n_predict") {
      n_predict = integer(value, where, "n_predict", 0, INT32_MAX);
    } else if (key == "temperature") {
      const double v = number(value, where, "temperature");
      if (!(std::isfinite(v) && v >= 0)) throw Error(where + ": \"temperature\" must be >= 0");
      r.options.sampling.temperature = static_cast<float>(v);
    } else if (key == "top_k") {
      r.options.sampling.top_k = static_cast<int>(integer(value, where, "top_k", 0, INT32_MAX));
    } else if (key == "top_p") {
      const double v = number(value, where, "top_p");
      if (!(v > 0 && v <= 1)) throw Error(where + ": \"top_p\" must be in (0, 1]");
      r.options.sampling.top_p = static_cast<float>(v);
    } else if (key == "min_p") {
      const double v = number(value, where, "min_p");
      if (!(v >= 0 && v <= 1)) throw Error(where + ": \"min_p\" must be in [0, 1]");
      r.options.sampling.min_p = static_cast<float>(v);
    } else if (key == "seed") {
      r.options.sampling.seed = static_cast<uint64_t>(integer(value, where, "seed", 0, INT64_MAX));
    } else if (key == "stop") {
      r.options.stop_strings.clear();
      if (value.is_string()) r.options.stop_strings.push_back(value.get<std::string>());
      else if (value.is_array()) {
        for (const auto& s : value) {
          if (!s.is_string()) throw Error(where + ": \"stop\" must be a string or a list of strings");
          r.options.stop_strings.push_back(s.get<std::string>());
        }
      } else {
        throw Error(where + ": \"stop\" must be a string or a list of strings");
      }
      for (const auto& s : r.options.stop_strings) if (s.empty()) throw Error(where + ": a stop string must not be empty");
    } else {
      throw Error(where + ": unknown field \"" + key +
                  "\" (known: prompt, ids, n_predict, temperature, top_k, top_p, min_p, seed, stop)");
    }
  }
  if (r.prompt_ids.empty()) throw Error(where + ": the prompt has no tokens");
  const int64_t prompt = static_cast<int64_t>(r.prompt_ids.size());
  if (prompt > context)
    throw Error(where + ": prompt of " + std::to_string(prompt) + " tokens is longer than the context (-c " +
                std::to_string(context) + ")");
  r.options.max_new_tokens = static_cast<int>(std::min<int64_t>(n_predict, context - prompt));
  return r;
}

}  // namespace

std::vector<GenerateRequest> read_prompts_file(const std::string& path, const Tokenizer* tokenizer,
                                               const ModelConfig& config, const GenerateOptions& defaults,
                                               int64_t context, bool no_bos) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("--prompts: cannot open " + path);
  std::vector<GenerateRequest> requests;
  std::string line;
  size_t bytes = 0;
  for (int number = 1; std::getline(in, line); ++number) {
    bytes += line.size() + 1;
    if (bytes > kMaxFileBytes) throw Error("--prompts: " + path + " is larger than 1 GiB");
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + " line " + std::to_string(number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw Error(where + ": not valid JSON");
    }
    requests.push_back(parse_line(j, where, tokenizer, config, defaults, context, no_bos));
  }
  if (requests.empty()) throw Error("--prompts: " + path + " has no requests");
  return requests;
}

}  // namespace podkv::cli
