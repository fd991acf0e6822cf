// The online continuous-batching loop of the server. HTTP threads submit
// requests at any time; one engine thread runs Runner::step after step over
// every running sequence (a decode token each, plus prompt chunks of the ones
// still prefilling), streams each request's text to its channel, and admits
// waiting requests in arrival order when their peak KV pages (prompt in
// chunks + max_tokens, the cache's formula) fit beside what the running ones
// were promised, so a running sequence never meets a full cache. A request
// whose client went away is cancelled: its pages are back before the next step.
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

struct EngineOptions {
  int parallel = 4;            // sequences running at once
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
    Clock::time_point arrival;
  };
  struct Running {
    std::shared_ptr<RequestChannel> channel;
    std::unique_ptr<SequenceGenerator> gen;
    int seq = 0;
    int64_t peak = 0;
    Clock::time_point arrival, admitted, first_token, last_token;
    size_t tokens_sent = 0;
  };

  void loop();
  void admit();
  void run_step();
  void retire(size_t index, const std::string& error);
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
  bool stopping_ = false;
  EngineGauges gauges_;
  std::thread thread_;

  // Engine thread only.
  std::vector<Running> running_;
  // Ended this iteration; told after the gauges are published, so a client
  // that scrapes /metrics after its answer sees its pages back.
  std::vector<std::pair<std::shared_ptr<RequestChannel>, RequestOutcome>> ended_;
  int64_t promised_ = 0;  // peak pages of the running requests
  int64_t steps_ = 0;
  Batch batch_;
  BatchResult result_;
};

}  // namespace podkv
