// Batched equals alone: sequences of different lengths run together in one
// batch per step (some in prefill chunks while others decode, some joining
// and leaving mid-way) give the logits each one gives run alone, for every
// KV policy; and the scheduler's continuously batched greedy outputs equal
// single runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "engine/generate.h"
#include "engine/runner.h"
#include "engine/scheduler.h"
#include "kv_test_util.h"
#include "model/model.h"
#include "policy/policies.h"

namespace podkv {
namespace {

const std::string kFixture = std::string(PODKV_SOURCE_DIR) + "/tests/fixtures/models/llama_gqa";
const std::string kReference = std::string(PODKV_SOURCE_DIR) + "/models/podkv-ref";

const std::vector<std::string> kPolicies = {"dense", "pod", "streaming", "h2o", "snapkv", "cla", "pod+snapkv"};

// Small windows and budgets so that every policy drops or shares tokens within 80 positions.
KvLayout small_layout(const ModelConfig& c, const std::string& policy) {
  return testing::small_policy_layout(c, policy, 2, 8, 6, 4, 2);
}

// One sequence's script: its prompt in chunks, then decode tokens (teacher
// forced, so both runs feed the same ids), starting at step `start`.
struct Script {
  int start = 0;
  std::vector<std::vector<int32_t>> chunks;  // prompt chunks, then one token per decode step
  int64_t prompt = 0;
  int prompt_chunks = 0;
};

std::vector<Script> make_scripts(int vocab, int count, std::mt19937& rng) {
  std::vector<Script> scripts;
  for (int i = 0; i < count; ++i) {
    Script s;
    s.start = (i * 3) % 7;
    s.prompt = 3 + static_cast<int64_t>(rng() % 40);
    const int64_t chunk = 1 + static_cast<int64_t>(rng() % 17);
    for (int64_t done = 0; done < s.prompt; done += chunk) {
      std::vector<int32_t> ids;
      for (int64_t t = done; t < std::min(s.prompt, done + chunk); ++t) ids.push_back(static_cast<int32_t>(rng() % vocab));
      s.chunks.push_back(ids);
    }
    s.prompt_chunks = static_cast<int>(s.chunks.size());
    const int decode = 2 + static_cast<int>(rng() % 30);
    for (int d = 0; d < decode; ++d) s.chunks.push_back({static_cast<int32_t>(rng() % vocab)});
    scripts.push_back(std::move(s));
  }
  return scripts;
}

BatchEntry entry_for(const Script& s, int seq, int step) {
  BatchEntry e;
  e.seq = seq;
  e.tokens = s.chunks[step];
  e.logits = LogitRows::All;
  const bool in_prompt = step < s.prompt_chunks;
  e.prompt_length = in_prompt ? s.prompt : 0;
  e.end_prefill = step == s.prompt_chunks - 1;
  return e;
}

std::unique_ptr<KvCache> cache_for(const KvLayout& layout, int sequences) {
  return std::make_unique<KvCache>(layout, static_cast<size_t>(sequences) * 2 * layout.num_layers *
                                               layout.num_kv_heads * 128 * layout.head_dim * 4, 4);
}

TEST(Batch, BatchedEqualsAloneForEveryPolicy) {
  auto model = Model::load(kFixture);
  const ModelConfig& c = model->config();
  std::mt19937 rng(5);
  const std::vector<Script> scripts = make_scripts(c.vocab_size, 9, rng);
  for (const std::string& policy : kPolicies) {
    SCOPED_TRACE(policy);
    const KvLayout layout = small_layout(c, policy);
    // Alone: each sequence in its own cache, one entry per step.
    std::vector<std::vector<std::vector<float>>> alone(scripts.size());  // [seq][step] logits rows
    for (size_t i = 0; i < scripts.size(); ++i) {
      auto cache = cache_for(layout, 1);
      Runner runner(*model, *cache);
      const int seq = runner.add_sequence();
      BatchResult out;
      for (size_t step = 0; step < scripts[i].chunks.size(); ++step) {
        runner.step(Batch{{entry_for(scripts[i], seq, static_cast<int>(step))}}, out);
        alone[i].push_back(out.logits);
      }
    }
    // Together: sequence i joins at its start step and leaves when its script ends.
    auto cache = cache_for(layout, static_cast<int>(scripts.size()));
    Runner runner(*model, *cache);
    std::vector<int> seq_of(scripts.size(), -1);
    std::vector<size_t> next(scripts.size(), 0);
    size_t finished = 0, compared = 0;
    int max_batch = 0;
    bool mixed = false;  // a step with both prefill chunks and decode tokens
    double worst = 0;
    for (int step = 0; finished < scripts.size(); ++step) {
      Batch batch;
      std::vector<size_t> members;
      for (size_t i = 0; i < scripts.size(); ++i) {
        if (step < scripts[i].start || next[i] >= scripts[i].chunks.size()) continue;
        if (seq_of[i] < 0) seq_of[i] = runner.add_sequence();
        batch.entries.push_back(entry_for(scripts[i], seq_of[i], static_cast<int>(next[i])));
        members.push_back(i);
      }
      if (members.empty()) continue;
      bool prefill = false, decode = false;
      for (size_t m : members) (next[m] < static_cast<size_t>(scripts[m].prompt_chunks) ? prefill : decode) = true;
      mixed = mixed || (prefill && decode);
      max_batch = std::max(max_batch, static_cast<int>(members.size()));
      BatchResult out;
      runner.step(batch, out);
      for (size_t e = 0; e < members.size(); ++e) {
        const size_t i = members[e];
        const std::vector<float>& ref = alone[i][next[i]];
        const int64_t rows = out.logit_begin[e + 1] - out.logit_begin[e];
        ASSERT_EQ(static_cast<size_t>(rows * c.vocab_size), ref.size());
        double max_diff = 0, max_ref = 0;
        const float* got = out.entry_logits(e);
        for (size_t k = 0; k < ref.size(); ++k) {
          max_diff = std::max(max_diff, static_cast<double>(std::fabs(got[k] - ref[k])));
          max_ref = std::max(max_ref, static_cast<double>(std::fabs(ref[k])));
        }
        worst = std::max(worst, max_diff / max_ref);
        compared += static_cast<size_t>(rows);
        if (++next[i] == scripts[i].chunks.size()) {
          runner.remove_sequence(seq_of[i]);
          ++finished;
        }
      }
    }
    EXPECT_LT(worst, 1e-5);
    EXPECT_GE(max_batch, 8);
    EXPECT_TRUE(mixed);
    EXPECT_GT(compared, 300u);
    EXPECT_EQ(cache->free_pages(), cache->num_pages());  // every page back
  }
}

TEST(Batch, RefusesABatchThatDoesNotFitAndChangesNothing) {
  auto model = Model::load(kFixture);
  const ModelConfig& c = model->config();
  const KvLayout layout = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
  // 2 layers x 2 heads x K/V = 8 streams of 2 pages (4 tokens each) per 5-token sequence:
  // 20 pages hold one sequence (16 pages), not two.
  KvCache cache(layout, 20 * 4 * static_cast<size_t>(c.head_dim) * 4, 4);
  Runner runner(*model, cache);
  const int a = runner.add_sequence(), b = runner.add_sequence();
  BatchResult out;
  Batch batch{{BatchEntry{a, {1, 2, 3, 4, 5}, LogitRows::Last, 5, true},
               BatchEntry{b, {6, 7, 8, 9, 10}, LogitRows::Last, 5, true}}};
  EXPECT_THROW(runner.step(batch, out), KvCacheFull);
  EXPECT_EQ(cache.free_pages(), 20u);
  EXPECT_EQ(cache.length(a), 0);
  batch.entries.pop_back();
  runner.step(batch, out);
  EXPECT_EQ(cache.length(a), 5);
  EXPECT_THROW(runner.step(Batch{{BatchEntry{a, {1}, LogitRows::Last, 0, false},
                                  BatchEntry{a, {2}, LogitRows::Last, 0, false}}},
                           out),
               Error);
  EXPECT_THROW(runner.step(Batch{{BatchEntry{b, {c.vocab_size}, LogitRows::Last, 0, false}}}, out), Error);
}

// Entries that carry a sample request get a token (drawn on the host by the CPU backend, from the
// logits it also returns); the others get -1; a request on an entry without LogitRows::Last is refused.
TEST(Batch, SampleRequestsGetTheirTokens) {
  auto model = Model::load(kFixture);
  const ModelConfig& c = model->config();
  KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), size_t{4} << 20, 4);
  Runner runner(*model, cache);
  const int a = runner.add_sequence(), b = runner.add_sequence(), d = runner.add_sequence();
  SamplingParams params;
  params.temperature = 1.0f;
  params.seed = 9;
  Sampler sampler(params);
  const SampleRequest request = sampler.request({1, 2, 3}, 3, c.vocab_size);
  const SampleRequest greedy;
  BatchResult out;
  Batch batch{{BatchEntry{a, {1, 2, 3}, LogitRows::Last, 3, true, &request},
               BatchEntry{b, {4, 5}, LogitRows::Last, 2, true},
               BatchEntry{d, {6}, LogitRows::Last, 1, true, &greedy}}};
  runner.step(batch, out);
  ASSERT_EQ(out.tokens.size(), 3u);
  LogitSampler host;
  EXPECT_EQ(out.tokens[0], host.sample(request, out.last_logits(0), c.vocab_size));
  EXPECT_EQ(out.tokens[1], -1);
  const float* l = out.last_logits(2);
  EXPECT_EQ(out.tokens[2], static_cast<int32_t>(std::max_element(l, l + c.vocab_size) - l));
  EXPECT_THROW(runner.step(Batch{{BatchEntry{a, {7}, LogitRows::None, 0, false, &greedy}}}, out), Error);
}

// 32 prompts with 8 in flight: exactly the greedy outputs of 32 single runs.
TEST(Batch, SchedulerGreedyEqualsSingleRuns) {
  auto model = Model::load(kReference);
  const ModelConfig& c = model->config();
  std::mt19937 rng(3);
  std::vector<GenerateRequest> requests(32);
  for (auto& r : requests) {
    r.prompt_ids.push_back(1);
    const int n = 1 + static_cast<int>(rng() % 50);
    for (int i = 0; i < n; ++i) r.prompt_ids.push_back(static_cast<int32_t>(3 + rng() % (c.vocab_size - 3)));
    r.options.max_new_tokens = 1 + static_cast<int>(rng() % 20);
    r.options.sampling.temperature = 0;
    r.options.stop_at_eos = false;
  }
  for (const char* policy : {"dense", "pod", "snapkv"}) {
    SCOPED_TRACE(policy);
    const KvLayout layout = testing::small_policy_layout(c, policy, 4, 16, 8, 8, 3);
    std::vector<std::vector<int32_t>> single;
    for (const auto& r : requests) {
      KvCache cache(layout, size_t{8} << 20, 16, KvDType::F32);
      Runner runner(*model, cache);
      single.push_back(generate(runner, runner.add_sequence(), nullptr, r.prompt_ids, r.options).generated_ids);
    }
    KvCache cache(layout, size_t{8} << 20, 16, KvDType::F32);
    Runner runner(*model, cache);
    runner.set_chunk_size(16);  // prompts cut into chunks, interleaved with other sequences' decode steps
    Scheduler scheduler(runner, nullptr, 8);
    std::vector<std::vector<int32_t>> batched(requests.size());
    scheduler.run(requests, [&](size_t i, GenerateResult& r) { batched[i] = r.generated_ids; });
    EXPECT_EQ(scheduler.max_running(), 8);
    for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(batched[i], single[i]) << "request " << i;
    EXPECT_EQ(cache.free_pages(), cache.num_pages());
  }
}

}  // namespace
}  // namespace podkv
