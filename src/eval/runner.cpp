#include "eval/runner.h"

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "engine/generator.h"
#include "engine/runner.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace podkv::eval {

namespace {

using Clock = std::chrono::steady_clock;

// Progress counts work in tokens, plus this much per forward call: a decode
// step of one token costs several prefill tokens (on the tiny model about 6),
// so the time left does not jump once the prefills are done.
constexpr int64_t kCallWork = 8;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::unique_ptr<KvCache> make_policy_cache(const EvalPolicy& p, int64_t length, int64_t chunk) {
  return p.make_cache ? p.make_cache(p.layout, length, chunk) : default_cache(p.layout, length, chunk);
}

std::string options_key(const EvalPolicy& p) { return p.options.dump(); }

// A runner over `cache` with the policy's weights (the run's when it has none;
// `policy` null is the dense reference of a window item).
std::unique_ptr<Runner> make_runner(const Model& model, const EvalPolicy* policy, const RunSettings& run, KvCache& cache) {
  if (policy != nullptr && policy->model != nullptr)
    return policy->backend != nullptr ? std::make_unique<Runner>(*policy->backend, cache)
                                      : std::make_unique<Runner>(*policy->model, cache);
  return run.backend != nullptr ? std::make_unique<Runner>(*run.backend, cache) : std::make_unique<Runner>(model, cache);
}

// One policy's cache, runner and sequence for a window item.
struct Lane {
  const EvalPolicy* policy = nullptr;  // null for the dense reference
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<Runner> runner;
  int seq = 0;
  std::vector<float> logits;
  ItemRecord record;
};

}  // namespace

std::unique_ptr<KvCache> default_cache(const KvLayout& layout, int64_t length, int64_t chunk) {
  const int page = 16;
  KvCache probe(layout, 0, page);  // sizes only: no pages
  const int64_t pages = probe.peak_pages(0, length, std::max<int64_t>(1, std::min(chunk, length)), length);
  return std::make_unique<KvCache>(layout, static_cast<size_t>(pages) * probe.page_bytes(), page);
}

nlohmann::json to_json(const ItemRecord& r) {
  nlohmann::json j = {{"item", r.item},           {"policy", r.policy},         {"options", r.options},
                      {"prompt_tokens", r.prompt_tokens}, {"kv_length", r.kv_length}, {"kv_bytes", r.kv_bytes},
                      {"kv_bytes_in_use", r.kv_bytes_in_use}, {"seconds", r.seconds}};
  if (r.score.scored > 0) {
    j["scored"] = r.score.scored;
    j["nll_sum"] = r.score.nll_sum;
    if (r.has_reference) {
      j["top1_agree"] = r.score.top1_agree;
      j["kl_sum"] = r.score.kl_sum;
    }
  } else {
    j["correct"] = r.correct;
    j["generated"] = r.generated;
  }
  return j;
}

ItemRecord record_from_json(const nlohmann::json& j) {
  // Integers must be JSON integers: nlohmann converts 1e300 to int64 with a
  // cast that is undefined behaviour out of range.
  auto integer = [&](const char* key) {
    const nlohmann::json& v = j.at(key);
    if (!v.is_number_integer()) throw Error(std::string("progress record: '") + key + "' is not an integer");
    return v.get<int64_t>();
  };
  ItemRecord r;
  const int64_t item = integer("item");
  if (item < 0 || item > INT32_MAX) throw Error("progress record: 'item' is out of range");
  r.item = static_cast<int>(item);
  r.policy = j.at("policy").get<std::string>();
  r.options = j.at("options").get<std::string>();
  r.prompt_tokens = integer("prompt_tokens");
  r.kv_length = integer("kv_length");
  r.kv_bytes = integer("kv_bytes");
  r.kv_bytes_in_use = integer("kv_bytes_in_use");
  r.seconds = j.at("seconds").get<double>();
  if (j.contains("scored")) {
    r.score.scored = integer("scored");
    r.score.nll_sum = j.at("nll_sum").get<double>();
    r.has_reference = j.contains("top1_agree");
    if (r.has_reference) {
      r.score.top1_agree = integer("top1_agree");
      r.score.kl_sum = j.at("kl_sum").get<double>();
    }
  } else {
    r.correct = j.at("correct").get<bool>();
    r.generated = j.at("generated").get<std::string>();
  }
  return r;
}

int max_new_tokens(const TaskItem& item, const TaskSettings& s, const Tokenizer& tok, int64_t model_context) {
  const int64_t wanted = s.max_new_tokens > 0 ? s.max_new_tokens
                                              : static_cast<int64_t>(tok.encode(" " + item.answer, false).size()) + 4;
  const int64_t room = model_context - static_cast<int64_t>(item.tokens.size());
  return static_cast<int>(std::max<int64_t>(0, std::min(wanted, room)));
}

ItemRecord run_grid_item(const Model& model, const Tokenizer& tok, const EvalPolicy& policy, const TaskItem& item,
                         const TaskSettings& s, const RunSettings& run) {
  const ModelConfig& c = model.config();
  const int n_new = max_new_tokens(item, s, tok, c.max_position_embeddings);
  const int64_t prompt = static_cast<int64_t>(item.tokens.size());
  auto cache = make_policy_cache(policy, prompt + n_new, run.chunk);
  std::unique_ptr<Runner> owned = make_runner(model, &policy, run, *cache);
  Runner& runner = *owned;
  runner.set_tau(policy.tau);
  runner.set_chunk_size(run.chunk);
  const int seq = cache->add_sequence();
  ItemRecord r;
  r.item = item.index;
  r.policy = policy.label;
  r.options = options_key(policy);
  r.prompt_tokens = prompt;

  // Greedy answer through the step-wise generator (the tokenizer's EOS ids
  // are added by hand: the text is decoded below, leniently, in one piece).
  GenerateOptions options;
  options.max_new_tokens = n_new;
  options.sampling.temperature = 0;
  options.eos_ids.assign(c.eos_token_ids.begin(), c.eos_token_ids.end());
  options.eos_ids.insert(options.eos_ids.end(), tok.eos_ids().begin(), tok.eos_ids().end());
  SequenceGenerator gen(nullptr, item.tokens, options, c.vocab_size);
  Batch batch;
  batch.entries.resize(1);
  BatchResult out;
  const auto t0 = Clock::now();
  cache->check_fits(seq, prompt, run.chunk, true);
  bool prefilled = false;
  while (!gen.done()) {
    batch.entries[0] = gen.next_entry(seq, run.chunk);
    runner.step(batch, out);
    if (batch.entries[0].logits == LogitRows::None) continue;
    if (!prefilled) {  // the cache right after the prefill
      prefilled = true;
      r.kv_length = cache->length(seq);
      r.kv_bytes = static_cast<int64_t>(cache->bytes_reserved(seq));
      r.kv_bytes_in_use = static_cast<int64_t>(cache->bytes_in_use(seq));
    }
    gen.accept(out.tokens[0]);
  }
  const std::vector<int32_t>& generated = gen.result().generated_ids;
  r.seconds = seconds_since(t0);
  r.generated = podkv::tok::utf8_lossy(tok.decode(generated));  // random models emit stray bytes
  r.correct = exact_match(r.generated, item.answer);
  return r;
}

std::vector<ItemRecord> run_window_item(const Model& model, const std::vector<const EvalPolicy*>& policies,
                                        const TaskItem& item, const TaskSettings& s, const RunSettings& run,
                                        bool with_reference, const std::function<void(int64_t)>& on_step) {
  const ModelConfig& c = model.config();
  const int64_t n = static_cast<int64_t>(item.tokens.size());
  const int64_t prefill = s.effective_prefill();
  check(prefill >= 1 && prefill < n, "--prefill: must be below the window length " + std::to_string(n));
  const int64_t chunk = std::max(run.chunk, s.decode_chunk);
  const KvLayout dense = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);

  std::vector<Lane> lanes(policies.size() + (with_reference ? 1 : 0));
  for (size_t i = 0; i < lanes.size(); ++i) {
    Lane& lane = lanes[i];
    const bool reference = with_reference && i == 0;
    lane.policy = reference ? nullptr : policies[i - (with_reference ? 1 : 0)];
    lane.cache = reference ? default_cache(dense, n, chunk) : make_policy_cache(*lane.policy, n, chunk);
    lane.runner = make_runner(model, lane.policy, run, *lane.cache);
    lane.runner->set_chunk_size(run.chunk);
    if (!reference) lane.runner->set_tau(lane.policy->tau);
    lane.seq = lane.cache->add_sequence();
    if (!reference) {
      lane.record.item = item.index;
      lane.record.policy = lane.policy->label;
      lane.record.options = options_key(*lane.policy);
      lane.record.prompt_tokens = n;
      lane.record.has_reference = with_reference;
    }
  }
  const size_t first_policy = with_reference ? 1 : 0;
  // Runs tokens [from, to) through every lane and scores the logits of
  // positions [score_from, score_to), each against the token after it.
  auto step = [&](int64_t from, int64_t to, bool all_logits, int64_t score_from, int64_t score_to) {
    const std::vector<int32_t> tokens(item.tokens.begin() + from, item.tokens.begin() + to);
    for (Lane& lane : lanes) {
      const auto t0 = Clock::now();
      lane.runner->forward(lane.seq, tokens, all_logits, lane.logits);
      lane.record.seconds += seconds_since(t0);
    }
    const int64_t rows = score_to - score_from;
    if (rows > 0) {
      const int64_t first_row = all_logits ? score_from - from : 0;  // without all_logits: the row of to - 1
      const int64_t offset = first_row * c.vocab_size;
      const float* reference = with_reference ? lanes[0].logits.data() + offset : nullptr;
      for (size_t i = first_policy; i < lanes.size(); ++i)
        score_rows(lanes[i].logits.data() + offset, reference, item.tokens.data() + score_from + 1, rows,
                   c.vocab_size, lanes[i].record.score);
    }
    if (on_step) on_step((to - from + kCallWork) * static_cast<int64_t>(lanes.size()));
  };
  // Prefill: tokens [0, prefill) in one call; its last logits (position
  // prefill - 1) predict token `prefill`.
  step(0, prefill, false, prefill - 1, prefill);
  // The rest in calls of decode_chunk tokens: positions up to n - 2 are scored;
  // the last token is run only so that the cache holds the whole window when
  // its bytes are read.
  for (int64_t pos = prefill; pos < n; pos += s.decode_chunk) {
    const int64_t to = std::min(n, pos + s.decode_chunk);
    step(pos, to, true, pos, std::min(to, n - 1));
  }
  std::vector<ItemRecord> records;
  for (size_t i = first_policy; i < lanes.size(); ++i) {
    Lane& lane = lanes[i];
    lane.record.kv_length = lane.cache->length(lane.seq);
    lane.record.kv_bytes = static_cast<int64_t>(lane.cache->bytes_reserved(lane.seq));
    lane.record.kv_bytes_in_use = static_cast<int64_t>(lane.cache->bytes_in_use(lane.seq));
    records.push_back(std::move(lane.record));
  }
  return records;
}

void run_eval(const Model& model, const Tokenizer& tok, const TaskSettings& s, const RunSettings& run,
              const std::vector<EvalPolicy>& policies, const std::vector<TaskItem>& items, const DoneSet& done,
              const RecordFn& on_record, const ProgressFn& on_progress) {
  const bool window = is_window_task(s.task);
  const int64_t context = model.config().max_position_embeddings;
  auto pending = [&](const TaskItem& item) {
    std::vector<const EvalPolicy*> pending_policies;
    for (const EvalPolicy& p : policies)
      if (!done.count({item.index, p.label, options_key(p)})) pending_policies.push_back(&p);
    return pending_policies;
  };
  auto grid_work = [&](const TaskItem& item) {
    return static_cast<int64_t>(item.tokens.size()) + (1 + kCallWork) * max_new_tokens(item, s, tok, context);
  };
  auto window_work = [&](const TaskItem& item) {  // per lane
    const int64_t n = static_cast<int64_t>(item.tokens.size()), prefill = s.effective_prefill();
    return n + kCallWork * (1 + (n - prefill + s.decode_chunk - 1) / s.decode_chunk);
  };
  int64_t total = 0, progress = 0;
  for (const TaskItem& item : items) {
    const int64_t pending_policies = static_cast<int64_t>(pending(item).size());
    if (pending_policies == 0) continue;
    total += window ? window_work(item) * (pending_policies + (s.task == "agreement" ? 1 : 0))
                    : grid_work(item) * pending_policies;
  }
  if (on_progress) on_progress(0, total);
  for (const TaskItem& item : items) {
    const std::vector<const EvalPolicy*> pending_policies = pending(item);
    if (pending_policies.empty()) continue;
    if (window) {
      auto records = run_window_item(model, pending_policies, item, s, run, s.task == "agreement", [&](int64_t work) {
        progress += work;
        if (on_progress) on_progress(progress, total);
      });
      for (const ItemRecord& r : records) on_record(r);
    } else {
      for (const EvalPolicy* p : pending_policies) {
        on_record(run_grid_item(model, tok, *p, item, s, run));
        progress += grid_work(item);
        if (on_progress) on_progress(progress, total);
      }
    }
  }
}

}  // namespace podkv::eval
