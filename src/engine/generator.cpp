#include "engine/generator.h"

#include <algorithm>

#include "util/error.h"

namespace podkv {

namespace {
double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
}  // namespace

SequenceGenerator::SequenceGenerator(const Tokenizer* tokenizer, std::vector<int32_t> prompt_ids,
                                     const GenerateOptions& options, int32_t vocab_size)
    : tokenizer_(tokenizer), options_(options), vocab_(vocab_size), sampler_(options.sampling) {
  check(!prompt_ids.empty(), "generate: the prompt has no tokens (give a prompt, or a model with a BOS token)");
  check(options.max_new_tokens >= 0, "generate: -n must not be negative");
  result_.prompt_ids = std::move(prompt_ids);
  history_ = result_.prompt_ids;
  eos_ = options.eos_ids;
  if (tokenizer != nullptr) {
    eos_.insert(eos_.end(), tokenizer->eos_ids().begin(), tokenizer->eos_ids().end());
    decoder_ = std::make_unique<StreamDecoder>(*tokenizer);
  }
  result_.stop_reason = "length";
  done_ = options.max_new_tokens == 0;
}

SequenceGenerator::~SequenceGenerator() = default;

BatchEntry SequenceGenerator::next_entry(int seq, int64_t chunk) {
  check(!done_, "generate: the sequence is finished");
  BatchEntry e;
  e.seq = seq;
  const int64_t prompt = static_cast<int64_t>(result_.prompt_ids.size());
  if (!started_) start_ = std::chrono::steady_clock::now();
  started_ = true;
  if (fed_ < prompt) {
    const int64_t n = std::min(chunk, prompt - fed_);
    e.tokens.assign(result_.prompt_ids.begin() + fed_, result_.prompt_ids.begin() + fed_ + n);
    fed_ += n;
    e.prompt_length = prompt;
    e.end_prefill = fed_ == prompt;
    // After a restart the first token is known already: no logits wanted.
    e.logits = e.end_prefill && result_.generated_ids.empty() ? LogitRows::Last : LogitRows::None;
    if (e.logits == LogitRows::Last) e.sample = &next_request();
    return e;
  }
  if (replayed_ < replay_end_) {
    const int64_t n = std::min(replay_chunk_, replay_end_ - replayed_);
    const auto from = result_.generated_ids.begin() + replayed_;
    e.tokens.assign(from, from + n);
    replayed_ += n;
    e.logits = LogitRows::None;
    return e;
  }
  check(pending_, "generate: no sampled token to feed");
  e.tokens = {result_.generated_ids.back()};
  e.sample = &next_request();
  pending_ = false;
  return e;
}

void SequenceGenerator::restart(int64_t replay_chunk) {
  check(!done_, "generate: the sequence is finished");
  check(replay_chunk >= 1, "generate: replay chunk must be at least 1");
  // The cache held the prompt (or part of it) and every generated token but
  // the last (fed or not, its step has not run).
  fed_ = 0;
  replayed_ = 0;
  replay_end_ = result_.generated_ids.empty() ? 0 : static_cast<int64_t>(result_.generated_ids.size()) - 1;
  replay_chunk_ = replay_chunk;
  pending_ = !result_.generated_ids.empty();
}

const SampleRequest& SequenceGenerator::next_request() {
  if (!request_) request_ = sampler_.request(history_, result_.prompt_ids.size(), vocab_);
  return *request_;
}

void SequenceGenerator::accept(int32_t next) {
  check(request_.has_value(), "generate: a token was accepted without a sample request");
  check(next >= 0 && next < vocab_,
        [&] { return "generate: sampled token " + std::to_string(next) + " is outside the vocabulary"; });
  request_.reset();
  if (result_.generated_ids.empty() && !pending_) first_token_ = std::chrono::steady_clock::now();
  if (options_.stop_at_eos && std::find(eos_.begin(), eos_.end(), next) != eos_.end()) {
    finish("eos");
    return;
  }
  result_.generated_ids.push_back(next);
  history_.push_back(next);
  std::string& text = result_.text;
  if (decoder_) {
    text += decoder_->push(next);
    // Hold back text that could be the start of a stop string.
    safe_ = text.size();
    const size_t hit = find_stop_string(text, options_.stop_strings, 0);
    if (hit != std::string::npos) {
      text.resize(hit);
      safe_ = hit;
      finish("stop_string");
      return;
    }
    for (const std::string& s : options_.stop_strings) {
      for (size_t k = std::min(s.size() - 1, text.size()); k > 0; --k) {
        if (text.compare(text.size() - k, k, s, 0, k) == 0) {
          safe_ = std::min(safe_, text.size() - k);
          break;
        }
      }
    }
  }
  if (static_cast<int>(result_.generated_ids.size()) == options_.max_new_tokens) {
    finish("length");
    return;
  }
  pending_ = true;
}

void SequenceGenerator::finish(const std::string& reason) {
  result_.stop_reason = reason;
  if (decoder_ && reason != "stop_string") result_.text += decoder_->flush();
  safe_ = result_.text.size();
  done_ = true;
  const auto now = std::chrono::steady_clock::now();
  if (result_.generated_ids.empty() && reason != "length") first_token_ = now;
  result_.prefill_seconds = seconds_between(start_, first_token_);
  result_.decode_seconds = seconds_between(first_token_, now);
}

std::string SequenceGenerator::take_text() {
  if (safe_ <= emitted_) return {};
  std::string piece = result_.text.substr(emitted_, safe_ - emitted_);
  emitted_ = safe_;
  return piece;
}

}  // namespace podkv
