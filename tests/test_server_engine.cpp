// The server's engine loop in process: requests submitted from several
// threads at once each get what a single run gives (no cross-talk), a
// cancelled request gives its pages back, the wait queue refuses beyond its
// bound, and a request that can never fit is refused at once.
#include <gtest/gtest.h>

#include <thread>

#include "cli_run.h"
#include "engine/generate.h"
#include "policy/policies.h"
#include "server/serving_engine.h"
#include "tokenizer/tokenizer.h"

namespace podkv {
namespace {

const std::string kRefModel = (clitest::kSourceDir / "models" / "podkv-ref").string();

struct Fixture {
  std::unique_ptr<Model> model = Model::load(kRefModel);
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(kRefModel);
  KvLayout layout = KvLayout::dense(model->config().num_layers, model->config().num_kv_heads, model->config().head_dim);

  GenerateRequest request(const std::string& text, int n, float temperature = 0, uint64_t seed = 0) {
    GenerateRequest r;
    r.prompt_ids = tokenizer->encode(text, true);
    r.options.max_new_tokens = n;
    r.options.sampling.temperature = temperature;
    r.options.sampling.seed = seed;
    r.options.eos_ids.assign(model->config().eos_token_ids.begin(), model->config().eos_token_ids.end());
    return r;
  }
  GenerateResult solo(const GenerateRequest& r) {
    KvCache cache(layout, 64u << 20, 16, KvDType::F32);
    Runner runner(*model, cache);
    return generate(runner, cache.add_sequence(), tokenizer.get(), r.prompt_ids, r.options);
  }
};

// 12 requests over 6 prompts: max_tokens = base + step * (i % cycle), every third one sampled (seeded).
std::vector<GenerateRequest> mixed_requests(Fixture& f, int base, int step, int cycle) {
  const char* prompts[] = {"It was a dark and stormy night", "The old man", "Once upon a time there was a king",
                           "She said", "In the beginning", "A"};
  std::vector<GenerateRequest> requests;
  for (int i = 0; i < 12; ++i)
    requests.push_back(f.request(prompts[i % 6], base + step * (i % cycle), i % 3 == 2 ? 0.8f : 0.0f, 100 + i));
  return requests;
}

std::string drain(RequestChannel& channel) {
  std::string text;
  while (!channel.wait(std::chrono::milliseconds(50), text)) {
  }
  return text;
}

TEST(ServerEngine, ConcurrentRequestsEqualSingleRuns) {
  Fixture f;
  const std::vector<GenerateRequest> requests = mixed_requests(f, 3, 5, 4);
  std::vector<GenerateResult> want;
  for (const auto& r : requests) want.push_back(f.solo(r));

  KvCache cache(f.layout, 16u << 20, 16, KvDType::F32);
  Runner runner(*f.model, cache);
  Metrics metrics;
  EngineOptions options;
  options.parallel = 4;
  options.queue = 64;
  options.prefill_chunk = 4;  // prompts span several chunks beside running decodes
  ServingEngine engine(runner, f.tokenizer.get(), options, metrics);
  engine.start();
  std::vector<std::string> streamed(requests.size());
  std::vector<RequestOutcome> outcomes(requests.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < requests.size(); ++i)
    clients.emplace_back([&, i] {
      auto channel = engine.submit(requests[i]);
      streamed[i] = drain(*channel);
      outcomes[i] = channel->outcome();
    });
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(outcomes[i].generated_ids, want[i].generated_ids) << i;
    EXPECT_EQ(outcomes[i].text, want[i].text) << i;
    EXPECT_EQ(streamed[i], want[i].text) << i;
    EXPECT_EQ(outcomes[i].finish_reason, want[i].stop_reason == "length" ? "length" : "stop") << i;
  }
  engine.stop();
  EXPECT_EQ(cache.total_bytes_reserved(), 0u);
  const EngineGauges g = engine.gauges();
  EXPECT_EQ(g.running, 0);
  EXPECT_EQ(g.kv_bytes_reserved, 0);
  EXPECT_GT(g.steps, 0);
}

// Admission::Current in a cache too small for what it admits: sequences are
// preempted (pages freed, recomputed later) and each still gets what a single
// run gives, sampled ones included; every page is back at the end.
TEST(ServerEngine, PreemptedRequestsEqualSingleRuns) {
  Fixture f;
  const std::vector<GenerateRequest> requests = mixed_requests(f, 20, 9, 5);
  std::vector<GenerateResult> want;
  for (const auto& r : requests) want.push_back(f.solo(r));

  // f32, 6 layers x 4 KV heads x 2 streams: 96 KiB per page of 16 tokens per
  // stream; 8 such pages (under 8 sequences of 2 pages each).
  KvCache cache(f.layout, 8 * 96 * 1024, 16, KvDType::F32);
  Runner runner(*f.model, cache);
  Metrics metrics;
  EngineOptions options;
  options.parallel = 8;
  options.prefill_chunk = 4;
  options.admission = Admission::Current;
  ServingEngine engine(runner, f.tokenizer.get(), options, metrics);
  // All queued before the start: the schedule, and so the preemptions, are
  // the same on every run.
  std::vector<std::shared_ptr<RequestChannel>> channels;
  for (const auto& r : requests) channels.push_back(engine.submit(r));
  engine.start();
  std::vector<std::string> streamed(requests.size());
  std::vector<RequestOutcome> outcomes(requests.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < requests.size(); ++i)
    clients.emplace_back([&, i] {
      streamed[i] = drain(*channels[i]);
      outcomes[i] = channels[i]->outcome();
    });
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(outcomes[i].generated_ids, want[i].generated_ids) << i;
    EXPECT_EQ(streamed[i], want[i].text) << i;
    EXPECT_TRUE(outcomes[i].error.empty()) << outcomes[i].error;
  }
  engine.stop();
  const EngineGauges g = engine.gauges();
  EXPECT_GT(g.preemptions, 0);
  EXPECT_GT(g.max_running, 1);
  EXPECT_EQ(cache.total_bytes_reserved(), 0u);
}

TEST(ServerEngine, CancelFreesPagesAndQueueIsBounded) {
  Fixture f;
  KvCache cache(f.layout, 16u << 20, 16, KvDType::F32);
  Runner runner(*f.model, cache);
  Metrics metrics;
  EngineOptions options;
  options.parallel = 1;
  options.queue = 2;
  ServingEngine engine(runner, f.tokenizer.get(), options, metrics);
  // Not started yet: submissions wait, so the queue bound is exact.
  auto first = engine.submit(f.request("One", 1000));
  auto second = engine.submit(f.request("Two", 4));
  try {
    engine.submit(f.request("Three", 4));
    FAIL() << "a third request was queued";
  } catch (const SubmitError& e) {
    EXPECT_EQ(e.status(), 503);
    EXPECT_NE(std::string(e.what()).find("--queue 2"), std::string::npos) << e.what();
  }
  try {
    engine.submit(f.request("Too long", 5000));
    FAIL();
  } catch (const SubmitError& e) {
    EXPECT_EQ(e.status(), 400);
  }
  engine.start();
  std::string text;
  while (text.empty()) first->wait(std::chrono::milliseconds(50), text);
  EXPECT_GT(cache.total_bytes_reserved(), 0u);
  first->cancel();
  drain(*first);
  EXPECT_TRUE(first->outcome().cancelled);
  EXPECT_LT(first->outcome().generated_ids.size(), 1000u);
  drain(*second);
  EXPECT_EQ(second->outcome().finish_reason, "length");
  engine.stop();
  EXPECT_EQ(cache.total_bytes_reserved(), 0u);
  EXPECT_THROW(engine.submit(f.request("late", 2)), SubmitError);
}

}  // namespace
}  // namespace podkv
