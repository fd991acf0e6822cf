// The online continuous-batching loop of the server. HTTP threads submit
// requests at any time; one engine thread runs Runner::step after step over
// every running sequence (a decode token each, plus prompt chunks of the ones
// still prefilling), streams each request's text to its channel, and admits
// waiting requests in arrival order. Admission::Peak admits a request when its
// peak KV pages (prompt in chunks + max_tokens, the cache's formula) fit
// beside what the running ones were promised, so a running sequence never
// meets a full cache. Admission::Current admits it when its prompt fits the
// free pages, so more run at once; when a step's pages are not there, the
// newest running request is preempted (its pages freed, its prompt and tokens
// recomputed when it is admitted again, ahead of the waiting ones), and its
// answer is the one it would have had. A request whose client went away is
// cancelled: its pages are back before the next step.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/generator.h"
#include "engine/runner.h"
#include "engine/scheduler.h"
#include "server/metrics.h"

namespace podkv {

// How a request ended.
struct RequestOutcome {
  std::string finish_reason;       // "stop" or "length"; empty when it failed or was cancelled
  std::string error;               // why it failed (the engine threw), else empty
  bool cancelled = false;
  int64_t prompt_tokens = 0;
  std::vector<int32_t> generated_ids;
  std::string text;                // the whole generated text (cut at a stop string)
  double queue_seconds = 0;        // from arrival to admission
  double time_to_first_token = 0;  // from arrival (0 when no token came)
  double total_seconds = 0;        // from arrival to the end
};

// One request's link between the engine thread and its HTTP thread.
class RequestChannel {
 public:
  // HTTP side. Waits up to `timeout` for new text or the end; appends the text
  // that became safe to show (and its token ids) and returns whether the
  // request has ended (then outcome() is final).
  bool wait(std::chrono::milliseconds timeout, std::string& text, std::vector<int32_t>* ids = nullptr);
  // The client went away: the engine drops the sequence at its next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  const RequestOutcome& outcome() const { return outcome_; }

  // Engine side.
  void push(const std::string& text, const std::vector<int32_t>& ids);
  void finish(RequestOutcome outcome);

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string text_;
  std::vector<int32_t> ids_;
  bool finished_ = false;
  RequestOutcome outcome_;
  std::atomic<bool> cancelled_{false};
};

enum class Admission { Peak, Current };

struct EngineOptions {
  int parallel = 4;            // sequences running at once
  Admission admission = Admission::Peak;
  int queue = 64;              // requests waiting beyond those; more get 503
  int64_t prefill_chunk = 256; // longest prompt chunk, and the prompt tokens one step takes (at least one chunk)
};

// submit() refusals: status 400 (can never run) or 503 (queue full, shutting down).
class SubmitError : public Error {
 public:
  SubmitError(int status, const std::string& message) : Error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

class ServingEngine {
 public:
  // `runner` (its cache, model and chunk size) and `tokenizer` (may be null)
  // must outlive the engine.
  ServingEngine(Runner& runner, const Tokenizer* tokenizer, const EngineOptions& options, Metrics& metrics);
  ~ServingEngine();

  void start();
  // Refuses new requests, lets every admitted and waiting one finish, joins.
  void stop();

  // Queues a request (prompt ids checked against the vocabulary by the caller).
  // Throws SubmitError 400 when its peak pages exceed the whole cache, 503 when
  // the wait queue is full or the engine is stopping.
  std::shared_ptr<RequestChannel> submit(GenerateRequest request);

  int64_t peak_pages(const GenerateRequest& request) const;
  EngineGauges gauges() const;
  const EngineOptions& options() const { return options_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Waiting {
    GenerateRequest request;
    std::shared_ptr<RequestChannel> channel;
    int64_t peak = 0;
    uint64_t number = 0;  // arrival order
    Clock::time_point arrival;
  };
  struct Running {
    std::shared_ptr<RequestChannel> channel;
    std::unique_ptr<SequenceGenerator> gen;
    int seq = -1;  // -1 while preempted
    int64_t peak = 0;
    uint64_t number = 0;
    int64_t replay_chunk = 1;  // generated tokens recomputed per step after a preemption
    Clock::time_point arrival, admitted, first_token, last_token;
    size_t tokens_sent = 0;
  };

  void loop();
  void admit();
  // Whether a request of `tokens` so far (`prompt` of them its prompt) and
  // `peak` pages may start now; `taken` counts the pages of the ones started
  // in this admission round.
  bool fits(int64_t tokens, int64_t prompt, int64_t peak, int64_t& taken) const;
  void start(Running& r);
  void run_step();
  // Frees the pages of the newest running request and moves it to preempted_;
  // returns its running_ index.
  size_t preempt_newest();
  void retire(size_t index, const std::string& error);
  RequestOutcome outcome_of(Running& r, const std::string& error) const;
  void publish_gauges();

  Runner& runner_;
  const Tokenizer* tokenizer_;
  EngineOptions options_;
  Metrics& metrics_;
  int32_t vocab_;
  int64_t dense_bytes_per_token_;

  mutable std::mutex mutex_;  // guards waiting_, stopping_, gauges_
  std::condition_variable wake_;
  std::deque<Waiting> waiting_;
  uint64_t arrivals_ = 0;
  bool stopping_ = false;
  EngineGauges gauges_;
  std::thread thread_;

  // Engine thread only.
  std::vector<Running> running_;
  std::vector<Running> preempted_;  // oldest first; admitted before any waiting request
  int64_t preemptions_ = 0;
  int64_t max_running_ = 0;
  // Ended this iteration; told after the gauges are published, so a client
  // that scrapes /metrics after its answer sees its pages back.
  std::vector<std::pair<std::shared_ptr<RequestChannel>, RequestOutcome>> ended_;
  int64_t promised_ = 0;  // peak pages of the running requests
  int64_t steps_ = 0;
  Batch batch_;
  BatchResult result_;
};

}  // namespace podkv
