#include "server/serving_engine.h"

#include <algorithm>

#include "kv/kv_entry.h"

namespace podkv {

namespace {
double seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
}  // namespace

bool RequestChannel::wait(std::chrono::milliseconds timeout, std::string& text, std::vector<int32_t>* ids) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return finished_ || !text_.empty() || !ids_.empty(); });
  text += text_;
  text_.clear();
  if (ids != nullptr) ids->insert(ids->end(), ids_.begin(), ids_.end());
  ids_.clear();
  return finished_;
}

void RequestChannel::push(const std::string& text, const std::vector<int32_t>& ids) {
  if (text.empty() && ids.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    text_ += text;
    ids_.insert(ids_.end(), ids.begin(), ids.end());
  }
  changed_.notify_all();
}

void RequestChannel::finish(RequestOutcome outcome) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    outcome_ = std::move(outcome);
    finished_ = true;
  }
  changed_.notify_all();
}

ServingEngine::ServingEngine(Runner& runner, const Tokenizer* tokenizer, const EngineOptions& options, Metrics& metrics)
    : runner_(runner), tokenizer_(tokenizer), options_(options), metrics_(metrics) {
  check(options.parallel >= 1, "--parallel: must be at least 1, got " + std::to_string(options.parallel));
  check(options.queue >= 0, "--queue: must not be negative, got " + std::to_string(options.queue));
  runner_.set_chunk_size(options.prefill_chunk);
  const ModelConfig& c = runner.model().config();
  vocab_ = c.vocab_size;
  dense_bytes_per_token_ = int64_t{c.num_layers} * 2 * c.num_kv_heads *
                           static_cast<int64_t>(kv_entry_bytes(runner.cache().dtype(), c.head_dim));
  publish_gauges();
}

ServingEngine::~ServingEngine() { stop(); }

void ServingEngine::start() {
  check(!thread_.joinable(), "serving engine: started twice");
  thread_ = std::thread([this] { loop(); });
}

void ServingEngine::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t ServingEngine::peak_pages(const GenerateRequest& r) const {
  // As Scheduler::peak_pages: the prompt in chunks, then one token per step.
  const int64_t prompt = static_cast<int64_t>(r.prompt_ids.size());
  const int64_t total = prompt + r.options.max_new_tokens;
  const KvCache& cache = runner_.cache();
  return std::max(cache.peak_pages(0, prompt, runner_.chunk_size(), prompt),
                  cache.peak_pages(prompt, total, 1, prompt));
}

std::shared_ptr<RequestChannel> ServingEngine::submit(GenerateRequest request) {
  const int64_t peak = peak_pages(request);
  const int64_t pages = static_cast<int64_t>(runner_.cache().num_pages());
  if (peak > pages)
    throw SubmitError(400, "the request needs " + std::to_string(peak) + " KV pages at its peak (prompt of " +
                               std::to_string(request.prompt_ids.size()) + " tokens + max_tokens " +
                               std::to_string(request.options.max_new_tokens) + "), more than the whole cache holds (" +
                               std::to_string(pages) + " pages, --kv-memory); ask for fewer tokens");
  auto channel = std::make_shared<RequestChannel>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw SubmitError(503, "the server is shutting down");
    if (static_cast<int64_t>(waiting_.size()) >= options_.queue)
      throw SubmitError(503, "the server is busy: " + std::to_string(waiting_.size()) +
                                 " requests are waiting already (--queue " + std::to_string(options_.queue) +
                                 "); retry later");
    waiting_.push_back(Waiting{std::move(request), channel, peak, Clock::now()});
    gauges_.waiting = static_cast<int64_t>(waiting_.size());
  }
  wake_.notify_all();
  return channel;
}

EngineGauges ServingEngine::gauges() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return gauges_;
}

void ServingEngine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return !running_.empty() || !waiting_.empty() || stopping_; });
      if (running_.empty() && waiting_.empty() && stopping_) break;
    }
    admit();
    // Cancelled sequences give their pages back before the step.
    for (size_t i = 0; i < running_.size();) {
      if (running_[i].channel->cancelled()) retire(i, "");
      else ++i;
    }
    if (!running_.empty()) run_step();
    publish_gauges();
    for (auto& [channel, outcome] : ended_) channel->finish(std::move(outcome));
    ended_.clear();
  }
}

void ServingEngine::admit() {
  const int64_t pages = static_cast<int64_t>(runner_.cache().num_pages());
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (it->channel->cancelled()) {
      RequestOutcome out;
      out.cancelled = true;
      out.prompt_tokens = static_cast<int64_t>(it->request.prompt_ids.size());
      out.total_seconds = seconds(it->arrival, Clock::now());
      it->channel->finish(std::move(out));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  // In arrival order: a request that does not fit waits, and so do the ones behind it.
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.parallel &&
         promised_ + waiting_.front().peak <= pages) {
    Waiting w = std::move(waiting_.front());
    waiting_.pop_front();
    Running r;
    r.channel = std::move(w.channel);
    r.gen = std::make_unique<SequenceGenerator>(tokenizer_, std::move(w.request.prompt_ids), w.request.options, vocab_);
    r.seq = runner_.add_sequence();
    r.peak = w.peak;
    r.arrival = w.arrival;
    r.admitted = Clock::now();
    promised_ += r.peak;
    running_.push_back(std::move(r));
  }
  gauges_.waiting = static_cast<int64_t>(waiting_.size());
}

void ServingEngine::run_step() {
  // Every decoding sequence gets its token; prefilling ones get a chunk while
  // the step's prompt tokens stay under one chunk (at least one chunk a step),
  // so a long prompt never holds up the running decodes for more than a chunk.
  batch_.entries.clear();
  std::vector<size_t> members;  // running_ index of each batch entry
  int64_t prefill_budget = runner_.chunk_size();
  for (size_t i = 0; i < running_.size(); ++i) {
    Running& r = running_[i];
    if (r.gen->done()) continue;
    if (r.gen->prefilling()) {
      if (prefill_budget <= 0) continue;
      batch_.entries.push_back(r.gen->next_entry(r.seq, runner_.chunk_size()));
      prefill_budget -= static_cast<int64_t>(batch_.entries.back().tokens.size());
    } else {
      batch_.entries.push_back(r.gen->next_entry(r.seq, runner_.chunk_size()));
    }
    members.push_back(i);
  }
  if (!batch_.entries.empty()) {
    try {
      runner_.step(batch_, result_);
    } catch (const std::exception& e) {
      // Never expected (admission keeps every running sequence within the
      // cache); the sequences of the failed step cannot go on.
      const std::string message = std::string("the engine failed: ") + e.what();
      for (size_t k = members.size(); k-- > 0;) retire(members[k], message);
      return;
    }
    ++steps_;
    const auto now = Clock::now();
    for (size_t e = 0; e < members.size(); ++e) {
      if (batch_.entries[e].logits == LogitRows::None) continue;
      Running& r = running_[members[e]];
      r.gen->accept(result_.last_logits(e));
      const std::vector<int32_t>& ids = r.gen->result().generated_ids;
      if (ids.size() > r.tokens_sent) {
        if (r.tokens_sent == 0) {
          r.first_token = now;
          metrics_.observe_time_to_first_token(seconds(r.arrival, now));
        } else { metrics_.observe_inter_token_latency(seconds(r.last_token, now));
        }
        r.last_token = now;
      }
      const std::vector<int32_t> new_ids(ids.begin() + static_cast<int64_t>(r.tokens_sent), ids.end());
      r.tokens_sent = ids.size();
      r.channel->push(r.gen->take_text(), new_ids);
    }
  }
  for (size_t i = running_.size(); i-- > 0;)
    if (running_[i].gen->done()) retire(i, "");
}

void ServingEngine::retire(size_t index, const std::string& error) {
  Running& r = running_[index];
  GenerateResult& g = r.gen->result();
  const auto now = Clock::now();
  RequestOutcome out;
  out.prompt_tokens = static_cast<int64_t>(g.prompt_ids.size());
  out.generated_ids = g.generated_ids;
  out.text = g.text;
  out.queue_seconds = seconds(r.arrival, r.admitted);
  out.total_seconds = seconds(r.arrival, now);
  if (r.tokens_sent > 0) out.time_to_first_token = seconds(r.arrival, r.first_token);
  if (!error.empty()) {
    out.error = error;
  } else if (!r.gen->done()) {
    out.cancelled = true;
  } else {
    out.finish_reason = g.stop_reason == "length" ? "length" : "stop";
  }
  metrics_.add_tokens(out.prompt_tokens, static_cast<int64_t>(out.generated_ids.size()));
  runner_.remove_sequence(r.seq);
  promised_ -= r.peak;
  ended_.emplace_back(std::move(r.channel), std::move(out));
  running_.erase(running_.begin() + static_cast<int64_t>(index));
}

void ServingEngine::publish_gauges() {
  const KvCache& cache = runner_.cache();
  EngineGauges g;
  g.running = static_cast<int64_t>(running_.size());
  for (const Running& r : running_) {
    g.kv_bytes_in_use += static_cast<int64_t>(cache.bytes_in_use(r.seq));
    g.dense_kv_bytes += cache.length(r.seq) * dense_bytes_per_token_;
  }
  g.kv_bytes_reserved = static_cast<int64_t>(cache.total_bytes_reserved());
  g.kv_bytes_free = static_cast<int64_t>(cache.free_pages() * cache.page_bytes());
  g.kv_bytes_budget = static_cast<int64_t>(cache.budget_bytes());
  g.steps = steps_;
  std::lock_guard<std::mutex> lock(mutex_);
  g.waiting = static_cast<int64_t>(waiting_.size());
  gauges_ = g;
}

}  // namespace podkv
