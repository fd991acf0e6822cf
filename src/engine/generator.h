// A step-wise generator for one sequence: the sampler state, stop strings,
// EOS, and UTF-8-safe streamed text. Whoever batches (generate, the --prompts
// scheduler, eval, analyze, the server) asks it for the sequence's next batch
// entry (a prompt chunk, or the last sampled token) and hands it the logits
// that entry produced.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/batch.h"
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
  double prefill_seconds = 0;   // from the first prompt chunk to the first token's logits
  double decode_seconds = 0;    // from there to the end
  int64_t kv_bytes_in_use = 0;  // at the end, for this sequence
  int64_t kv_bytes_reserved = 0;
};

class SequenceGenerator {
 public:
  // `tokenizer` may be null (ids in and out only; stop strings then unused).
  SequenceGenerator(const Tokenizer* tokenizer, std::vector<int32_t> prompt_ids, const GenerateOptions& options,
                    int32_t vocab_size);
  ~SequenceGenerator();

  bool done() const { return done_; }
  // Prompt tokens, or generated ones being recomputed after restart(), are to be fed.
  bool prefilling() const {
    return fed_ < static_cast<int64_t>(result_.prompt_ids.size()) || replayed_ < replay_end_;
  }
  // The next entry of sequence `seq`: up to `chunk` prompt tokens (the last
  // chunk wants logits and ends the prefill), or the last sampled token.
  BatchEntry next_entry(int seq, int64_t chunk);
  // The sequence's KV entries are gone (the server preempted it between
  // steps, or after next_entry when that step did not run): the next
  // entries feed the prompt again in chunks, then the generated tokens but the
  // last in entries of up to `replay_chunk` tokens, all without logits, then
  // the last one as a decode step; the sampler, the text and what was streamed
  // carry on unchanged, so the result is the one of an uninterrupted run.
  void restart(int64_t replay_chunk);
  // The token drawn for the entry that wanted logits (BatchResult::tokens:
  // next_entry attached this sequence's sample request to it): updates the
  // text and the stop state.
  void accept(int32_t token);
  // Text that became safe to show since the last call (held back: a possible
  // start of a stop string, an incomplete UTF-8 sequence).
  std::string take_text();
  GenerateResult& result() { return result_; }

 private:
  void finish(const std::string& reason);
  const SampleRequest& next_request();

  const Tokenizer* tokenizer_;
  GenerateOptions options_;
  int32_t vocab_;
  Sampler sampler_;
  // The next draw's request, made when an entry first wants logits and kept until accept(): an
  // entry handed out again after restart() reuses it, so the random draws stay those of an
  // uninterrupted run.
  std::optional<SampleRequest> request_;
  std::unique_ptr<StreamDecoder> decoder_;
  std::vector<int32_t> history_;
  std::vector<int32_t> eos_;
  GenerateResult result_;
  int64_t fed_ = 0;        // prompt tokens handed out
  int64_t replayed_ = 0;   // after restart(): generated tokens handed out again ...
  int64_t replay_end_ = 0; // ... of these (all but the pending one)
  int64_t replay_chunk_ = 1;
  bool started_ = false;
  bool pending_ = false;   // a sampled token waits to be fed
  bool done_ = false;
  size_t safe_ = 0;        // bytes of text that may be shown
  size_t emitted_ = 0;     // bytes of text already taken
  std::chrono::steady_clock::time_point start_, first_token_;
};

}  // namespace podkv
