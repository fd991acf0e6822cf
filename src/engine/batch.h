// A batch step (in the spirit of llama.cpp's llama_batch and a vLLM scheduler
// step): for each of several sequences a run of new tokens (a prefill chunk
// or one decode token) and which of its rows want logits.
#pragma once

#include <cstdint>
#include <vector>

namespace podkv {

struct SampleRequest;  // sampling/sampler.h

enum class LogitRows { None, Last, All };

struct BatchEntry {
  int seq = 0;
  std::vector<int32_t> tokens;  // appended at positions length .. length + n - 1
  LogitRows logits = LogitRows::Last;
  // Prefill chunks: the length of the whole prompt, so that SnapKV scores the
  // attention of its last `window` queries whichever chunk they fall in.
  // 0 for decode steps.
  int64_t prompt_length = 0;
  // The prompt is complete after this entry: SnapKV and PoD+SnapKV select.
  bool end_prefill = false;
  // With logits == Last: the draw of the next token from the last row (the
  // backend samples on its device when it can, otherwise the runner on the
  // host); BatchResult::tokens gets the token. Must outlive the step.
  const SampleRequest* sample = nullptr;
};

struct Batch {
  std::vector<BatchEntry> entries;
};

struct BatchResult {
  std::vector<float> logits;          // [rows that want logits, vocab], entry by entry
  std::vector<int64_t> logit_begin;   // [entries + 1]: entry i's rows are [logit_begin[i], logit_begin[i + 1])
  int64_t vocab = 0;
  // [entries]: the sampled token of entries with a sample request, else -1. When the
  // device sampled every requested row, `logits` holds no rows (logit_begin is still set).
  std::vector<int32_t> tokens;

  const float* entry_logits(size_t entry) const { return logits.data() + logit_begin[entry] * vocab; }
  // The last logits row of an entry (its next-token distribution).
  const float* last_logits(size_t entry) const { return logits.data() + (logit_begin[entry + 1] - 1) * vocab; }
};

}  // namespace podkv
