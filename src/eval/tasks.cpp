#include "eval/tasks.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv::eval {

namespace {

std::string fmt(double v) {
  std::string s = std::to_string(v);
  while (s.find('.') != std::string::npos && (s.back() == '0' || s.back() == '.')) {
    const bool dot = s.back() == '.';
    s.pop_back();
    if (dot) break;
  }
  return s;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::string random_digits(std::mt19937_64& rng, int digits) {
  std::string s(1, static_cast<char>('1' + rng() % 9));
  for (int i = 1; i < digits; ++i) s += static_cast<char>('0' + rng() % 10);
  return s;
}

std::string random_hex(std::mt19937_64& rng, int digits) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < digits; ++i) s += hex[rng() % 16];
  return s;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
}

std::vector<int32_t> with_bos(int32_t bos, std::vector<int32_t> ids) {
  if (bos >= 0) ids.insert(ids.begin(), bos);
  return ids;
}

void append(std::vector<int32_t>& to, const std::vector<int32_t>& ids) { to.insert(to.end(), ids.begin(), ids.end()); }

// Haystack tokens a prompt of `length` leaves after the intro, needle and question.
int64_t haystack_tokens(int64_t length, size_t intro, size_t needle, size_t question, const char* task) {
  const int64_t fixed = static_cast<int64_t>(intro + needle + question);
  if (length <= fixed)
    throw Error(std::string("--lengths: ") + std::to_string(length) + " tokens is too short for a " + task +
                " prompt (the intro, needle and question alone take " + std::to_string(fixed) + ")");
  return length - fixed;
}

// intro | haystack[0, at) | needle | haystack[at, n) | question, with
// at = round(depth / 100 · n).
GridPrompt place_needle(const std::vector<int32_t>& intro, const std::vector<int32_t>& haystack,
                        const std::vector<int32_t>& needle, const std::vector<int32_t>& question, double depth) {
  const int64_t n = static_cast<int64_t>(haystack.size());
  const int64_t at = std::llround(depth / 100.0 * static_cast<double>(n));
  GridPrompt p;
  p.tokens = intro;
  p.tokens.insert(p.tokens.end(), haystack.begin(), haystack.begin() + at);
  p.needle_position = static_cast<int64_t>(p.tokens.size());
  p.needle_tokens = static_cast<int64_t>(needle.size());
  append(p.tokens, needle);
  p.tokens.insert(p.tokens.end(), haystack.begin() + at, haystack.end());
  append(p.tokens, question);
  return p;
}

const char* kPasskeyIntro =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n";
const char* kPasskeyFiller = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const char* kNiahIntro =
    "Some important information is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about it afterwards.\n";
const char* kKvIntro = "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n{";

}  // namespace

const char* known_tasks() { return "agreement, perplexity, passkey, niah, kv-retrieval"; }
bool is_grid_task(const std::string& t) { return t == "passkey" || t == "niah" || t == "kv-retrieval"; }
bool is_window_task(const std::string& t) { return t == "agreement" || t == "perplexity"; }

void validate_settings(const TaskSettings& s, int64_t model_context) {
  if (!is_grid_task(s.task) && !is_window_task(s.task))
    throw Error("--task: unknown task '" + s.task + "' (known: " + known_tasks() + ")");
  if (s.samples < 0) throw Error("--samples: must not be negative");
  if ((is_window_task(s.task) || s.task == "niah") && s.data_files.empty())
    throw Error("--data: the task " + s.task + " needs text files (--data FILE...)");
  if (is_window_task(s.task)) {
    if (s.context < 2) throw Error("--context: must be at least 2 tokens, got " + std::to_string(s.context));
    if (s.context > model_context)
      throw Error("--context: " + std::to_string(s.context) + " tokens is longer than the model's context (" +
                  std::to_string(model_context) + " tokens)");
    if (s.prefill < 0) throw Error("--prefill: must be at least 1, got " + std::to_string(s.prefill));
    const int64_t p = s.effective_prefill();
    if (p < 1 || p >= s.context)
      throw Error("--prefill: must be in 1.." + std::to_string(s.context - 1) + " (below --context), got " + std::to_string(p));
    if (s.decode_chunk < 1) throw Error("--decode-chunk: must be at least 1, got " + std::to_string(s.decode_chunk));
    return;
  }
  if (s.lengths.empty()) throw Error("--lengths: give at least one context length");
  if (s.depths.empty()) throw Error("--depths: give at least one depth");
  for (double d : s.depths)
    if (!(d >= 0 && d <= 100)) throw Error("--depths: " + fmt(d) + " is outside 0..100 (percent of the haystack)");
  if (s.max_new_tokens < 0) throw Error("--max-new-tokens: must not be negative");
  const int64_t room = s.max_new_tokens > 0 ? s.max_new_tokens : 1;
  for (int64_t len : s.lengths) {
    if (len < 1) throw Error("--lengths: " + std::to_string(len) + " is not a positive length");
    if (len + room > model_context)
      throw Error("--lengths: " + std::to_string(len) + " tokens (plus " + std::to_string(room) +
                  " to generate) is longer than the model's context (" + std::to_string(model_context) + " tokens)");
  }
  if (s.task == "niah" && s.needle.find("{answer}") == std::string::npos && s.answer.empty())
    throw Error("--needle: put {answer} in the needle, or give --answer");
  if (s.task == "niah" && s.question.empty()) throw Error("--question: must not be empty");
}

nlohmann::json to_json(const TaskSettings& s) {
  nlohmann::json j = {{"task", s.task}, {"data", s.data_files}, {"samples", s.effective_samples()}, {"seed", s.seed}};
  if (!s.bos) j["bos"] = false;  // absent when true: the settings of runs before the option stay equal
  if (is_window_task(s.task)) {
    j["context"] = s.context;
    j["prefill"] = s.effective_prefill();
    j["decode_chunk"] = s.decode_chunk;
  } else {
    j["lengths"] = s.lengths;
    j["depths"] = s.depths;
    j["max_new_tokens"] = s.max_new_tokens;
    if (s.task == "niah") {
      j["needle"] = s.needle;
      j["question"] = s.question;
      j["answer"] = s.answer;
    }
  }
  return j;
}

uint64_t prompt_seed(uint64_t seed, int length_index, int depth_index, int sample) {
  uint64_t x = splitmix64(seed);
  x = splitmix64(x ^ static_cast<uint64_t>(length_index));
  x = splitmix64(x ^ static_cast<uint64_t>(depth_index));
  return splitmix64(x ^ static_cast<uint64_t>(sample));
}

GridPrompt passkey_prompt(const Tokenizer& tok, int32_t bos, int64_t length, double depth, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::string key = random_digits(rng, 5);
  const auto intro = with_bos(bos, tok.encode(kPasskeyIntro, false));
  const auto needle = tok.encode(" The pass key is " + key + ". Remember it. " + key + " is the pass key.", false);
  const auto question = tok.encode("\nWhat is the pass key? The pass key is", false);
  const int64_t n = haystack_tokens(length, intro.size(), needle.size(), question.size(), "passkey");
  const auto unit = tok.encode(kPasskeyFiller, false);
  std::vector<int32_t> haystack;
  haystack.reserve(n);
  while (static_cast<int64_t>(haystack.size()) < n) append(haystack, unit);
  haystack.resize(n);
  GridPrompt p = place_needle(intro, haystack, needle, question, depth);
  p.answer = key;
  return p;
}

GridPrompt niah_prompt(const Tokenizer& tok, int32_t bos, const std::vector<int32_t>& text, int64_t length, double depth,
                       const TaskSettings& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::string answer = s.answer.empty() ? random_digits(rng, 7) : s.answer;
  std::string needle_text = s.needle;
  replace_all(needle_text, "{answer}", answer);
  const auto intro = with_bos(bos, tok.encode(kNiahIntro, false));
  const auto needle = tok.encode(" " + needle_text + " ", false);
  const auto question = tok.encode("\n" + s.question, false);
  const int64_t n = haystack_tokens(length, intro.size(), needle.size(), question.size(), "niah");
  if (static_cast<int64_t>(text.size()) < n)
    throw Error("--data: the haystack holds " + std::to_string(text.size()) + " tokens, fewer than the " +
                std::to_string(n) + " that --lengths " + std::to_string(length) + " needs");
  const int64_t offset = static_cast<int64_t>(rng() % static_cast<uint64_t>(text.size() - n + 1));
  const std::vector<int32_t> haystack(text.begin() + offset, text.begin() + offset + n);
  GridPrompt p = place_needle(intro, haystack, needle, question, depth);
  p.answer = answer;
  return p;
}

GridPrompt kv_retrieval_prompt(const Tokenizer& tok, int32_t bos, int64_t length, double depth, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto intro = with_bos(bos, tok.encode(kKvIntro, false));
  auto question_for = [&](const std::string& key) { return tok.encode("}\n\nKey: \"" + key + "\"\nCorresponding value:", false); };
  struct Pair {
    std::string key, value;
    std::vector<int32_t> ids;
  };
  std::vector<Pair> pairs;
  std::set<std::string> keys;
  int64_t used = static_cast<int64_t>(intro.size());
  size_t longest_question = 0;
  while (true) {
    Pair pair;
    do pair.key = random_hex(rng, 8); while (keys.count(pair.key));
    pair.value = random_hex(rng, 8);
    pair.ids = tok.encode(std::string(pairs.empty() ? "" : ", ") + "\"" + pair.key + "\": \"" + pair.value + "\"", false);
    const size_t q = std::max(longest_question, question_for(pair.key).size());
    if (used + static_cast<int64_t>(pair.ids.size() + q) > length) break;
    keys.insert(pair.key);
    used += static_cast<int64_t>(pair.ids.size());
    longest_question = q;
    pairs.push_back(std::move(pair));
  }
  if (pairs.empty())
    throw Error("--lengths: " + std::to_string(length) + " tokens is too short for a kv-retrieval prompt");
  const size_t asked = static_cast<size_t>(std::llround(depth / 100.0 * static_cast<double>(pairs.size() - 1)));
  GridPrompt p;
  p.tokens = intro;
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (i == asked) {
      p.needle_position = static_cast<int64_t>(p.tokens.size());
      p.needle_tokens = static_cast<int64_t>(pairs[i].ids.size());
    }
    append(p.tokens, pairs[i].ids);
  }
  append(p.tokens, question_for(pairs[asked].key));
  p.answer = pairs[asked].value;
  return p;
}

std::vector<int32_t> read_text_tokens(const std::string& path, const Tokenizer& tok, int64_t min_tokens) {
  if (std::filesystem::is_directory(path)) throw Error("--data: " + path + " is a directory, not a text file");
  // Bounded: a pipe or a special file (/dev/zero) has no size to ask for.
  std::string text = read_file_bounded(path, kMaxTextBytes, "--data");
  if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);
  std::erase(text, '\r');
  // Tokenize a prefix cut at a line end; grow it until it gives enough tokens.
  for (size_t take = static_cast<size_t>(std::max<int64_t>(min_tokens, 1) * 8);; take *= 2) {
    if (take >= text.size()) return tok.encode(text, false);
    const size_t line_end = text.rfind('\n', take);
    const size_t cut = line_end == std::string::npos || line_end == 0 ? take : line_end + 1;
    std::vector<int32_t> ids = tok.encode(std::string_view(text).substr(0, cut), false);
    if (static_cast<int64_t>(ids.size()) >= min_tokens) return ids;
  }
}

std::vector<TaskItem> build_items(const TaskSettings& s, const Tokenizer& tok, int32_t bos) {
  if (!s.bos) bos = -1;  // --no-bos
  std::vector<TaskItem> items;
  const int samples = s.effective_samples();
  if (is_window_task(s.task)) {
    const int64_t body = s.context - (bos >= 0 ? 1 : 0);  // text tokens per window
    int64_t total = 0;
    for (const std::string& file : s.data_files) {
      const int64_t missing = samples - static_cast<int64_t>(items.size());
      if (missing <= 0) break;
      const std::vector<int32_t> ids = read_text_tokens(file, tok, missing * body);
      total += static_cast<int64_t>(ids.size());
      for (int64_t off = 0; off + body <= static_cast<int64_t>(ids.size()) && static_cast<int>(items.size()) < samples;
           off += body) {
        TaskItem item;
        item.index = static_cast<int>(items.size());
        item.length = s.context;
        item.sample = item.index;
        item.tokens = with_bos(bos, std::vector<int32_t>(ids.begin() + off, ids.begin() + off + body));
        item.source = file + "@" + std::to_string(off);
        items.push_back(std::move(item));
      }
    }
    if (items.empty())
      throw Error("--data: the text holds " + std::to_string(total) + " tokens, fewer than the " + std::to_string(body) +
                  " a window of --context " + std::to_string(s.context) + " needs");
    return items;
  }
  std::vector<int32_t> haystack;
  if (s.task == "niah") {
    const int64_t longest = *std::max_element(s.lengths.begin(), s.lengths.end());
    for (const std::string& file : s.data_files) {
      if (static_cast<int64_t>(haystack.size()) >= longest) break;
      append(haystack, read_text_tokens(file, tok, longest - static_cast<int64_t>(haystack.size())));
    }
  }
  for (size_t li = 0; li < s.lengths.size(); ++li) {
    for (size_t di = 0; di < s.depths.size(); ++di) {
      for (int sample = 0; sample < samples; ++sample) {
        const uint64_t seed = prompt_seed(s.seed, static_cast<int>(li), static_cast<int>(di), sample);
        const int64_t len = s.lengths[li];
        const double depth = s.depths[di];
        GridPrompt p = s.task == "passkey" ? passkey_prompt(tok, bos, len, depth, seed)
                       : s.task == "niah"  ? niah_prompt(tok, bos, haystack, len, depth, s, seed)
                                           : kv_retrieval_prompt(tok, bos, len, depth, seed);
        TaskItem item;
        item.index = static_cast<int>(items.size());
        item.length = len;
        item.length_index = static_cast<int>(li);
        item.depth_index = static_cast<int>(di);
        item.depth = depth;
        item.sample = sample;
        item.tokens = std::move(p.tokens);
        item.answer = std::move(p.answer);
        item.needle_position = p.needle_position;
        item.needle_tokens = p.needle_tokens;
        items.push_back(std::move(item));
      }
    }
  }
  return items;
}

}  // namespace podkv::eval
