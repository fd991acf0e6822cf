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
    waiting_.push_back(Waiting{std::move(request), channel, peak, arrivals_++, Clock::now()});
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
      wake_.wait(lock, [&] { return !running_.empty() || !preempted_.empty() || !waiting_.empty() || stopping_; });
      if (running_.empty() && preempted_.empty() && waiting_.empty() && stopping_) break;
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
  for (size_t i = 0; i < preempted_.size();) {
    if (!preempted_[i].channel->cancelled()) {
      ++i;
      continue;
    }
    ended_.emplace_back(std::move(preempted_[i].channel), outcome_of(preempted_[i], ""));
    preempted_.erase(preempted_.begin() + static_cast<int64_t>(i));
  }
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
  // In arrival order, the preempted ones (admitted before any waiting one)
  // first: a request that does not fit waits, and so do the ones behind it.
  int64_t taken = 0;
  if (options_.admission == Admission::Current) {
    // Pages the running ones still need for the prompts (and recomputed
    // tokens) they were admitted with: without them, requests admitted but
    // still waiting for their prefill turn would look free and too many start.
    const KvCache& cache = runner_.cache();
    for (const Running& r : running_) {
      if (!r.gen->prefilling()) continue;
      const GenerateResult& g = r.gen->result();
      const int64_t prompt = static_cast<int64_t>(g.prompt_ids.size());
      const int64_t tokens = prompt + std::max<int64_t>(0, static_cast<int64_t>(g.generated_ids.size()) - 1);
      const int64_t held = static_cast<int64_t>(cache.bytes_reserved(r.seq) / cache.page_bytes());
      taken += std::max<int64_t>(0, cache.peak_pages(0, tokens, runner_.chunk_size(), prompt) - held);
    }
  }
  while (!preempted_.empty() && static_cast<int>(running_.size()) < options_.parallel) {
    Running& r = preempted_.front();
    const GenerateResult& g = r.gen->result();
    const int64_t prompt = static_cast<int64_t>(g.prompt_ids.size());
    if (!fits(prompt + static_cast<int64_t>(g.generated_ids.size()), prompt, r.peak, taken)) break;
    start(r);
    running_.push_back(std::move(r));
    preempted_.erase(preempted_.begin());
  }
  while (preempted_.empty() && !waiting_.empty() && static_cast<int>(running_.size()) < options_.parallel) {
    Waiting& w = waiting_.front();
    const int64_t prompt = static_cast<int64_t>(w.request.prompt_ids.size());
    if (!fits(prompt, prompt, w.peak, taken)) break;
    Running r;
    r.channel = std::move(w.channel);
    r.peak = w.peak;
    r.number = w.number;
    r.arrival = w.arrival;
    r.admitted = Clock::now();
    // Recomputing the generated tokens in prompt-sized chunks gives the same
    // entries when no token selection depends on the order of the steps
    // (H2O, SnapKV), and when the chunks' pages fit the cache beside nothing.
    const int64_t total = prompt + w.request.options.max_new_tokens;
    if (runner_.cache().layout().selection == Selection::None &&
        runner_.cache().peak_pages(prompt, total, runner_.chunk_size(), prompt) <=
            static_cast<int64_t>(runner_.cache().num_pages()))
      r.replay_chunk = runner_.chunk_size();
    r.gen = std::make_unique<SequenceGenerator>(tokenizer_, std::move(w.request.prompt_ids), w.request.options, vocab_);
    start(r);
    running_.push_back(std::move(r));
    waiting_.pop_front();
  }
  max_running_ = std::max(max_running_, static_cast<int64_t>(running_.size()));
  gauges_.waiting = static_cast<int64_t>(waiting_.size() + preempted_.size());
}

bool ServingEngine::fits(int64_t tokens, int64_t prompt, int64_t peak, int64_t& taken) const {
  const KvCache& cache = runner_.cache();
  if (options_.admission == Admission::Peak) {
    if (promised_ + peak > static_cast<int64_t>(cache.num_pages())) return false;
    taken += peak;
    return true;
  }
  // Current: the pages to feed what it has so far, beside those the running
  // ones are owed (`taken`) and a page per stream for the next token of each
  // (so that an admission does not preempt at once).
  const int64_t need = cache.peak_pages(0, tokens, runner_.chunk_size(), prompt);
  const int64_t margin = static_cast<int64_t>(running_.size()) * cache.peak_pages(0, 1, 1);
  if (taken + need + margin > static_cast<int64_t>(cache.free_pages()) && !running_.empty()) return false;
  taken += need;
  return true;
}

void ServingEngine::start(Running& r) {
  r.seq = runner_.add_sequence();
  promised_ += r.peak;
}

size_t ServingEngine::preempt_newest() {
  size_t newest = 0;
  for (size_t i = 1; i < running_.size(); ++i)
    if (running_[i].number > running_[newest].number) newest = i;
  Running& r = running_[newest];
  runner_.remove_sequence(r.seq);
  r.seq = -1;
  promised_ -= r.peak;
  r.gen->restart(r.replay_chunk);
  ++preemptions_;
  auto at = std::upper_bound(preempted_.begin(), preempted_.end(), r.number,
                             [](uint64_t n, const Running& p) { return n < p.number; });
  preempted_.insert(at, std::move(r));
  running_.erase(running_.begin() + static_cast<int64_t>(newest));
  return newest;
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
  // Preempt the newest while the step's pages are not there (never the last
  // one: alone, a request fits the cache, as submit() checked).
  const KvCache& cache = runner_.cache();
  for (;;) {
    int64_t need = 0;
    for (const BatchEntry& e : batch_.entries)
      need += cache.pages_to_reserve(e.seq, cache.length(e.seq) + static_cast<int64_t>(e.tokens.size()));
    if (need <= static_cast<int64_t>(cache.free_pages()) || running_.size() < 2) break;
    const size_t gone = preempt_newest();
    for (size_t e = members.size(); e-- > 0;) {
      if (members[e] == gone) {
        members.erase(members.begin() + static_cast<int64_t>(e));
        batch_.entries.erase(batch_.entries.begin() + static_cast<int64_t>(e));
      } else if (members[e] > gone) {
        --members[e];
      }
    }
  }
  if (!batch_.entries.empty()) {
    try {
      runner_.step(batch_, result_);
    } catch (const std::exception& e) {
      // Never expected (admission and preemption keep the step within the
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
      r.gen->accept(result_.tokens[e]);
      const std::vector<int32_t>& ids = r.gen->result().generated_ids;
      if (ids.size() > r.tokens_sent) {
        if (r.tokens_sent == 0) {
          r.first_token = now;
          metrics_.observe_time_to_first_token(seconds(r.arrival, now));
        } else {
          metrics_.observe_inter_token_latency(seconds(r.last_token, now));
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

RequestOutcome ServingEngine::outcome_of(Running& r, const std::string& error) const {
  GenerateResult& g = r.gen->result();
  RequestOutcome out;
  out.prompt_tokens = static_cast<int64_t>(g.prompt_ids.size());
  out.generated_ids = g.generated_ids;
  out.text = g.text;
  out.queue_seconds = seconds(r.arrival, r.admitted);
  out.total_seconds = seconds(r.arrival, Clock::now());
  if (r.tokens_sent > 0) out.time_to_first_token = seconds(r.arrival, r.first_token);
  if (!error.empty()) {
    out.error = error;
  } else if (!r.gen->done()) {
    out.cancelled = true;
  } else {
    out.finish_reason = g.stop_reason == "length" ? "length" : "stop";
  }
  metrics_.add_tokens(out.prompt_tokens, static_cast<int64_t>(out.generated_ids.size()));
  return out;
}

void ServingEngine::retire(size_t index, const std::string& error) {
  Running& r = running_[index];
  RequestOutcome out = outcome_of(r, error);
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
  g.preemptions = preemptions_;
  g.max_running = max_running_;
  std::lock_guard<std::mutex> lock(mutex_);
  g.waiting = static_cast<int64_t>(waiting_.size() + preempted_.size());
  gauges_ = g;
}

}  // namespace podkv
