// Continuous batching of many generation requests over one runner: up to
// `parallel` sequences run at once, each step one batch with a prompt chunk
// or a decode token of every running sequence; new requests start, in order,
// as others finish and as KV pages allow. A request is admitted only when the
// pages it may need at its peak (prompt + max_new_tokens, chunked) fit beside
// what the running ones may still need, so a running sequence never meets a
// full cache.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/generator.h"
#include "engine/runner.h"

namespace podkv {

struct GenerateRequest {
  std::vector<int32_t> prompt_ids;
  GenerateOptions options;
};

class Scheduler {
 public:
  Scheduler(Runner& runner, const Tokenizer* tokenizer, int parallel);

  // Pages request `r` may hold at its peak.
  int64_t peak_pages(const GenerateRequest& r) const;
  // Runs every request; `on_done(index, result)` as each one finishes (any
  // order). Throws Error before anything runs when a request alone cannot fit
  // the cache (naming its index).
  void run(const std::vector<GenerateRequest>& requests,
           const std::function<void(size_t index, GenerateResult& result)>& on_done);

  int64_t steps() const { return steps_; }
  int max_running() const { return max_running_; }

 private:
  Runner& runner_;
  const Tokenizer* tokenizer_;
  int parallel_;
  int64_t steps_ = 0;
  int max_running_ = 0;
};

}  // namespace podkv
