#include "engine/scheduler.h"

#include <algorithm>
#include <memory>

#include "util/error.h"

namespace podkv {

Scheduler::Scheduler(Runner& runner, const Tokenizer* tokenizer, int parallel)
    : runner_(runner), tokenizer_(tokenizer), parallel_(parallel) {
  check(parallel >= 1, "--parallel: must be at least 1, got " + std::to_string(parallel));
}

int64_t Scheduler::peak_pages(const GenerateRequest& r) const {
  const int64_t prompt = static_cast<int64_t>(r.prompt_ids.size());
  const int64_t total = prompt + r.options.max_new_tokens;
  // The prompt in chunks, then one token per step.
  const KvCache& cache = runner_.cache();
  return std::max(cache.peak_pages(0, prompt, runner_.chunk_size(), prompt), cache.peak_pages(prompt, total, 1, prompt));
}

void Scheduler::run(const std::vector<GenerateRequest>& requests,
                    const std::function<void(size_t index, GenerateResult& result)>& on_done) {
  KvCache& cache = runner_.cache();
  const int64_t pages = static_cast<int64_t>(cache.num_pages());
  std::vector<int64_t> peak(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    peak[i] = peak_pages(requests[i]);
    if (peak[i] > pages)
      throw KvCacheFull("request " + std::to_string(i) + " needs " + std::to_string(peak[i]) +
                        " KV pages at its peak, more than the whole cache (" + std::to_string(pages) + " pages)");
  }
  struct Running {
    size_t index;
    int seq;
    std::unique_ptr<SequenceGenerator> gen;
  };
  std::vector<Running> running;
  size_t next = 0;
  int64_t promised = 0;  // peak pages of the running requests
  const int32_t vocab = runner_.model().config().vocab_size;
  Batch batch;
  BatchResult out;
  while (next < requests.size() || !running.empty()) {
    // Admit in order while there is room (a request that does not fit waits,
    // and so do the ones behind it, so that outputs do not depend on timing).
    while (next < requests.size() && static_cast<int>(running.size()) < parallel_ && promised + peak[next] <= pages) {
      auto gen = std::make_unique<SequenceGenerator>(tokenizer_, requests[next].prompt_ids, requests[next].options, vocab);
      const int seq = runner_.add_sequence();
      promised += peak[next];
      running.push_back(Running{next, seq, std::move(gen)});
      ++next;
    }
    max_running_ = std::max(max_running_, static_cast<int>(running.size()));
    batch.entries.clear();
    for (Running& r : running)
      if (!r.gen->done()) batch.entries.push_back(r.gen->next_entry(r.seq, runner_.chunk_size()));
    if (!batch.entries.empty()) {
      runner_.step(batch, out);
      ++steps_;
      size_t e = 0;
      for (Running& r : running) {
        if (r.gen->done()) continue;
        if (batch.entries[e].logits != LogitRows::None) r.gen->accept(out.tokens[e]);
        ++e;
      }
    }
    // Retire the finished ones (every page back).
    for (size_t i = 0; i < running.size();) {
      if (!running[i].gen->done()) {
        ++i;
        continue;
      }
      GenerateResult& result = running[i].gen->result();
      result.kv_bytes_in_use = static_cast<int64_t>(cache.bytes_in_use(running[i].seq));
      result.kv_bytes_reserved = static_cast<int64_t>(cache.bytes_reserved(running[i].seq));
      runner_.remove_sequence(running[i].seq);
      promised -= peak[running[i].index];
      on_done(running[i].index, result);
      running.erase(running.begin() + static_cast<int64_t>(i));
    }
  }
}

}  // namespace podkv
