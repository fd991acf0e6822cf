// The inputs of podkv eval's tasks, built from the settings and a seed so that
// every run is reproducible.
//
// Window tasks (agreement, perplexity) cut the tokens of the --data text files
// into windows of `context` tokens (BOS first when the model has one). Grid
// tasks (passkey, niah, kv-retrieval) build one prompt per (context length,
// depth, sample): an intro, a haystack with the needle placed at
//   needle_position = intro_tokens + round(depth / 100 · haystack_tokens),
// and a question at the end; every prompt of passkey and niah is exactly
// `length` tokens (pieces are tokenized apart and their ids concatenated).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/tokenizer.h"

namespace podkv::eval {

// "agreement, perplexity, passkey, niah, kv-retrieval"
const char* known_tasks();
bool is_grid_task(const std::string& task);
bool is_window_task(const std::string& task);

struct TaskSettings {
  std::string task;
  std::vector<std::string> data_files;  // text (UTF-8; BOM and CRLF are normalised)
  int samples = 0;                      // windows (window tasks) or prompts per grid cell; 0 = 4 / 1
  uint64_t seed = 0;
  // Put the model's BOS first (false: podkv eval --no-bos, for models trained on text rows
  // without one, whose text after a BOS is a different distribution).
  bool bos = true;
  // Window tasks.
  int64_t context = 1024;    // tokens per window
  int64_t prefill = 0;       // tokens of the first forward call; 0 = context / 2
  int64_t decode_chunk = 1;  // tokens per later forward call (1 = token by token)
  // Grid tasks.
  std::vector<int64_t> lengths;  // prompt tokens, the grid's columns
  std::vector<double> depths;    // needle depth in percent of the haystack, the grid's rows
  std::string needle = "The special magic number is {answer}.";  // niah; {answer} is replaced
  std::string question = "What is the special magic number? The special magic number is";
  std::string answer;            // niah: fixed answer; empty = a random 7-digit number per prompt
  int max_new_tokens = 0;        // 0 = the answer's tokens + 4

  int effective_samples() const { return samples > 0 ? samples : (is_grid_task(task) ? 1 : 4); }
  int64_t effective_prefill() const { return prefill > 0 ? prefill : context / 2; }
};

// Throws Error naming the option for an unknown task, a depth outside 0..100,
// a length or context longer than `model_context`, and other bad settings.
void validate_settings(const TaskSettings& s, int64_t model_context);

// The settings as JSON, for results.json and the --resume check.
nlohmann::json to_json(const TaskSettings& s);

struct TaskItem {
  int index = 0;                 // position in the run's list of items
  int64_t length = 0;            // grid: requested prompt tokens; window: window tokens
  int length_index = -1;         // grid column (-1 for windows)
  int depth_index = -1;          // grid row (-1 for windows)
  double depth = NAN;            // percent
  int sample = 0;
  std::vector<int32_t> tokens;   // grid: the prompt; window: the window
  std::string answer;            // grid: what the model must generate
  int64_t needle_position = -1;  // grid: first token of the needle (kv-retrieval: of the asked pair)
  int64_t needle_tokens = 0;
  std::string source;            // window: "FILE@OFFSET" (offset in tokens of the file's text)
};

// A grid prompt: the tokens and where its needle lies.
struct GridPrompt {
  std::vector<int32_t> tokens;
  std::string answer;
  int64_t needle_position = 0;
  int64_t needle_tokens = 0;
};

// Passkey (Mohtashami & Jaggi): a random 5-digit key in repeated filler text.
GridPrompt passkey_prompt(const Tokenizer& tok, int32_t bos, int64_t length, double depth, uint64_t seed);
// Needle in a haystack of the user's text: haystack[offset ...] around the needle.
GridPrompt niah_prompt(const Tokenizer& tok, int32_t bos, const std::vector<int32_t>& haystack, int64_t length,
                       double depth, const TaskSettings& s, uint64_t seed);
// RULER-like key-value retrieval: a JSON object of random 8-hex-digit keys and
// values filling the prompt; the pair at `depth` is asked for. Prompts are at
// most `length` tokens (whole pairs only).
GridPrompt kv_retrieval_prompt(const Tokenizer& tok, int32_t bos, int64_t length, double depth, uint64_t seed);

// The seed of one grid prompt from the run's seed and its place in the grid.
uint64_t prompt_seed(uint64_t seed, int length_index, int depth_index, int sample);

// Tokens (no BOS) of the text file at `path`, at least `min_tokens` of them
// when the file has that many (large files are read only as far as needed).
std::vector<int32_t> read_text_tokens(const std::string& path, const Tokenizer& tok, int64_t min_tokens);

// Every item of the task, in a fixed order. `bos` is the id put first (-1 = none; none either
// when s.bos is false).
std::vector<TaskItem> build_items(const TaskSettings& s, const Tokenizer& tok, int32_t bos);

}  // namespace podkv::eval
