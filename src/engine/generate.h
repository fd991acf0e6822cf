// Text generation: prefill the prompt, then sample one token at a time until
// the token budget, an EOS token or a stop string. Streams whole UTF-8 pieces
// to a callback; the library never prints.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/runner.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace podkv {

struct GenerateOptions {
  int max_new_tokens = 64;
  SamplingParams sampling;
  std::vector<std::string> stop_strings;
  bool stop_at_eos = true;
  std::vector<int32_t> eos_ids;  // besides the tokenizer's
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
  std::string text;             // decoded generated text, cut at a stop string
  std::string stop_reason;      // "length", "eos" or "stop_string"
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t kv_bytes_in_use = 0;  // at the end, for this sequence
  int64_t kv_bytes_reserved = 0;
};

// `tokenizer` may be null (ids in and out only; stop strings then unused).
// `on_text` receives each newly complete piece of text (may be empty function).
GenerateResult generate(Runner& runner, int seq, const Tokenizer* tokenizer, const std::vector<int32_t>& prompt_ids,
                        const GenerateOptions& options, const std::function<void(const std::string&)>& on_text = {});

}  // namespace podkv
