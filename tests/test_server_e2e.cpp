// podkv serve end to end, over HTTP on a loopback port with the shipped
// reference model: greedy completions equal `podkv generate --json`, streamed
// chunks concatenate to the same text and end with [DONE], 64 concurrent
// requests each equal their solo answer (dense and pod, admitted by peak, and
// by current need with preemption in a tiny cache), presence and frequency
// penalties equal generate's, chat through a
// template, bad input and auth refused with OpenAI error objects while the
// server keeps serving, overload answered with 503, a disconnect mid-stream
// gives the KV bytes back, /metrics agrees with what was served, and SIGTERM
// ends the server with exit code 0.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "server_process.h"

namespace podkv::clitest {
namespace {

using nlohmann::json;


class ServeE2E : public CliTest {
 protected:
  std::unique_ptr<ServeProcess> serve(std::vector<std::string> args) {
    args.insert(args.begin(), {"-m", kRefModel.string(), "-t", "1"});
    auto s = std::make_unique<ServeProcess>(args, tmp_ / "io");
    EXPECT_TRUE(s->started()) << s->log();
    return s;
  }
};

// The streamed text of a completion or chat response, checking the event shapes.
std::string streamed_text(const std::string& body, bool chat, json* finish = nullptr, json* usage = nullptr) {
  bool done = false;
  const auto events = sse_events(body, &done);
  EXPECT_TRUE(done) << body;
  std::string text;
  for (size_t i = 0; i < events.size(); ++i) {
    const json& e = events[i];
    EXPECT_EQ(e.at("object"), chat ? "chat.completion.chunk" : "text_completion") << e;
    if (e.at("choices").empty()) {
      if (usage) *usage = e.at("usage");
      continue;
    }
    const json& c = e.at("choices")[0];
    if (!c.at("finish_reason").is_null() && finish) *finish = c.at("finish_reason");
    if (chat) {
      if (i == 0) {
        EXPECT_EQ(c.at("delta").at("role"), "assistant") << e;
      }
      if (c.at("delta").contains("content")) text += c.at("delta").at("content").get<std::string>();
    } else {
      text += c.at("text").get<std::string>();
    }
  }
  return text;
}

TEST_F(ServeE2E, GreedyCompletionsEqualGenerateAndStreamTheSameText) {
  const std::vector<std::pair<std::string, int>> prompts = {
      {"It was a dark and stormy night", 24}, {"The old man", 9}, {"", 5}, {"Once upon a time there was a king", 40}};
  for (const std::string policy : {"dense", "pod"}) {
    auto server = serve({"--kv", policy});
    auto c = server->client();
    for (const auto& [prompt, n] : prompts) {
      const CliResult g = run({"generate", "-m", kRefModel.string(), "-p", prompt, "-n", std::to_string(n), "--temp",
                               "0", "--kv", policy, "--json", "-t", "1"});
      ASSERT_EQ(g.exit_code, 0) << g;
      const json want = json::parse(g.out);
      const json request = {{"prompt", prompt}, {"max_tokens", n}, {"temperature", 0}, {"return_token_ids", true}};
      const HttpReply r = post(*c, "/v1/completions", request.dump());
      ASSERT_EQ(r.status, 200) << r.body;
      const json got = r.json();
      EXPECT_EQ(got.at("object"), "text_completion");
      EXPECT_EQ(got.at("model"), "podkv-ref");
      EXPECT_TRUE(got.at("id").get<std::string>().starts_with("cmpl-"));
      EXPECT_TRUE(got.at("created").is_number_integer());
      const json& choice = got.at("choices")[0];
      EXPECT_EQ(choice.at("text"), want.at("text")) << policy << " '" << prompt << "'";
      EXPECT_EQ(choice.at("token_ids"), want.at("generated_ids")) << policy << " '" << prompt << "'";
      EXPECT_EQ(choice.at("finish_reason"), want.at("stop_reason") == "length" ? "length" : "stop");
      EXPECT_EQ(got.at("usage").at("prompt_tokens"), want.at("prompt_ids").size());
      EXPECT_EQ(got.at("usage").at("completion_tokens"), want.at("generated_ids").size());
      EXPECT_EQ(got.at("usage").at("total_tokens"), want.at("prompt_ids").size() + want.at("generated_ids").size());

      json stream = request;
      stream["stream"] = true;
      stream["stream_options"] = {{"include_usage", true}};
      const HttpReply s = post(*c, "/v1/completions", stream.dump());
      ASSERT_EQ(s.status, 200) << s.body;
      EXPECT_NE(s.body.find("data: "), std::string::npos);
      json finish, usage;
      EXPECT_EQ(streamed_text(s.body, false, &finish, &usage), want.at("text").get<std::string>()) << policy << " '" << prompt << "'";
      EXPECT_EQ(finish, choice.at("finish_reason"));
      EXPECT_EQ(usage, got.at("usage"));
    }
    EXPECT_EQ(server->stop(), 0) << server->log();
  }
}

// 64 requests of different prompt and output lengths (mostly greedy, some
// seeded samples, a third streamed), all sent at once.
std::vector<json> mixed_requests(int count) {
  const char* prompts[] = {"It was a dark and stormy night", "The old man", "Once upon a time there was a king",
                           "She said", "In the beginning", "A", "The ship sailed", "When the morning came"};
  std::vector<json> requests;
  for (int i = 0; i < count; ++i) {
    json r = {{"prompt", std::string(prompts[i % 8]) + (i >= 8 ? " " + std::to_string(i) : "")},
              {"max_tokens", 4 + (i * 7) % 45}};
    if (i % 8 == 3) r.update({{"temperature", 0.9}, {"seed", 1000 + i}, {"top_k", 50}});
    else r["temperature"] = 0;
    if (i % 3 == 1) r["stream"] = true;
    requests.push_back(r);
  }
  return requests;
}

std::string text_of(const json& request, const HttpReply& r) {
  EXPECT_EQ(r.status, 200) << r.body;
  if (r.status != 200) return "";
  if (request.value("stream", false)) return streamed_text(r.body, false);
  return r.json().at("choices")[0].at("text").get<std::string>();
}

// Each request alone, one after the other, on one connection.
std::vector<std::string> solo_answers(ServeProcess& server, const std::vector<json>& requests) {
  std::vector<std::string> solo;
  auto c = server.client();
  for (const json& r : requests) solo.push_back(text_of(r, post(*c, "/v1/completions", r.dump())));
  return solo;
}

// All the requests at once, each from its own connection; every answer must
// be its solo one. With `first_runs` the first request is running before the
// others are sent.
void expect_concurrent_answers(ServeProcess& server, const std::vector<json>& requests,
                               const std::vector<std::string>& solo, const std::string& what,
                               bool first_runs = false) {
  std::vector<std::future<std::string>> answers;
  for (size_t i = 0; i < requests.size(); ++i) {
    answers.push_back(std::async(std::launch::async, [&server, r = requests[i]] {
      auto c = server.client();
      return text_of(r, post(*c, "/v1/completions", r.dump()));
    }));
    if (i == 0 && first_runs) {
      auto c = server.client();
      for (int k = 0; k < 500 && metric(get(*c, "/metrics").body, "podkv_sequences_running") < 1; ++k)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(answers[i].get(), solo[i]) << what << " request " << i;
}

void expect_solo_answers(ServeProcess& server, const std::vector<json>& requests, const std::string& what) {
  expect_concurrent_answers(server, requests, solo_answers(server, requests), what);
}

// /metrics once the request counter reached `answered` 200s (or after 5 s):
// the server counts a request after its response is written, so a scrape from
// another connection right after the last answer can precede that count.
std::string metrics_after(ServeProcess& server, double answered) {
  auto c = server.client();
  std::string text;
  for (int i = 0; i < 250; ++i) {
    text = get(*c, "/metrics").body;
    if (metric(text, "podkv_requests_total{endpoint=\"/v1/completions\",status=\"200\"}") >= answered) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return text;
}

TEST_F(ServeE2E, ConcurrentRequestsEqualTheirSoloAnswers) {
  const std::vector<json> requests = mixed_requests(64);
  for (const std::string policy : {"dense", "pod"}) {
    auto server = serve({"--kv", policy, "--parallel", "16", "--prefill-chunk", "8"});
    expect_solo_answers(*server, requests, policy);
    const std::string metrics = metrics_after(*server, 128);
    EXPECT_EQ(metric(metrics, "podkv_requests_total{endpoint=\"/v1/completions\",status=\"200\"}"), 128) << metrics;
    EXPECT_EQ(metric(metrics, "podkv_sequences_running"), 0);
    EXPECT_GE(metric(metrics, "podkv_sequences_running_max"), 2);
    EXPECT_LE(metric(metrics, "podkv_sequences_running_max"), 16);
    EXPECT_EQ(metric(metrics, "podkv_kv_bytes_reserved"), 0);
    EXPECT_EQ(metric(metrics, "podkv_preemptions_total"), 0);  // --admit peak never preempts
    EXPECT_EQ(server->stop(), 0) << server->log();
  }
}

// --admit current starts requests on what their prompts need, so with a tiny
// cache the running ones outgrow it: the newest are preempted and recomputed,
// and every answer is still its solo one.
TEST_F(ServeE2E, CurrentAdmissionPreemptsAndAnswersStayTheSolo) {
  const std::vector<json> requests = mixed_requests(32);
  for (const std::string policy : {"dense", "pod"}) {
    // f32 entries: 96 KiB per 16 tokens of a sequence; 1M holds about 10
    // such pages per stream. A first request grows to 9 of them while the
    // others (2-4 each) run beside it, so some must be preempted if enough of
    // them arrive before the first ends.
    auto server = serve({"--kv", policy, "--kv-dtype", "f32", "--kv-memory", "1M", "--admit", "current", "--parallel",
                         "16", "--prefill-chunk", "8"});
    const json first = {{"prompt", "A long tale"}, {"max_tokens", 130}, {"temperature", 0}, {"stream", true}};
    std::vector<json> all = requests;
    all.insert(all.begin(), first);
    const std::vector<std::string> solo = solo_answers(*server, all);
    // Whether the burst arrives while the first request is long enough to
    // force a preemption depends on the machine's timing (CI's two cores
    // under the sanitizers once ran no more than five at once and preempted
    // nothing), so the burst is sent again, up to four times, until one was
    // preempted; every round's answers must be the solo ones.
    std::string metrics;
    double answered = static_cast<double>(all.size());
    for (int round = 1; round <= 4; ++round) {
      expect_concurrent_answers(*server, all, solo, policy + " round " + std::to_string(round), true);
      answered += static_cast<double>(all.size());
      metrics = metrics_after(*server, answered);
      if (metric(metrics, "podkv_preemptions_total") > 0) break;
    }
    EXPECT_GT(metric(metrics, "podkv_preemptions_total"), 0) << metrics;
    EXPECT_GT(metric(metrics, "podkv_sequences_running_max"), 2) << metrics;
    EXPECT_EQ(metric(metrics, "podkv_sequences_running"), 0);
    EXPECT_EQ(metric(metrics, "podkv_sequences_waiting"), 0);
    EXPECT_EQ(metric(metrics, "podkv_kv_bytes_reserved"), 0);
    EXPECT_EQ(metric(metrics, "podkv_requests_total{endpoint=\"/v1/completions\",status=\"200\"}"), answered)
        << metrics;
    EXPECT_EQ(server->stop(), 0) << server->log();
  }
}

// OpenAI's presence and frequency penalties, as `podkv generate` applies them.
TEST_F(ServeE2E, PresenceAndFrequencyPenaltiesEqualGenerate) {
  auto server = serve({});
  auto c = server->client();
  const std::string prompt = "The old man and the old man and the";
  std::string plain;
  for (const auto& [presence, frequency] : std::vector<std::pair<double, double>>{{0, 0}, {0.8, 0}, {0, 1.5}, {0.5, 1}}) {
    const CliResult g = run({"generate", "-m", kRefModel.string(), "-p", prompt, "-n", "40", "--temp", "0",
                             "--presence-penalty", std::to_string(presence), "--frequency-penalty",
                             std::to_string(frequency), "--json", "-t", "1"});
    ASSERT_EQ(g.exit_code, 0) << g;
    const json want = json::parse(g.out);
    const json request = {{"prompt", prompt},          {"max_tokens", 40},
                          {"temperature", 0},          {"presence_penalty", presence},
                          {"frequency_penalty", frequency}};
    const HttpReply r = post(*c, "/v1/completions", request.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const std::string text = r.json().at("choices")[0].at("text");
    EXPECT_EQ(text, want.at("text").get<std::string>()) << presence << " " << frequency;
    if (presence == 0 && frequency == 0) plain = text;
    else EXPECT_NE(text, plain) << "the penalty changed nothing: " << presence << " " << frequency;
  }
  EXPECT_EQ(server->stop(), 0);
}

TEST_F(ServeE2E, ChatThroughTheTemplateOrA400) {
  {
    auto server = serve({});
    auto c = server->client();
    const HttpReply r = post(*c, "/v1/chat/completions", R"({"messages": [{"role": "user", "content": "Hi"}]})");
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.json().at("error").at("message").get<std::string>().find("--chat-template"), std::string::npos) << r.body;
    EXPECT_EQ(post(*c, "/v1/completions", R"({"prompt": "Hi", "max_tokens": 2})").status, 200);
    EXPECT_EQ(server->stop(), 0);
  }
  auto server = serve({"--chat-template", "llama3"});
  auto c = server->client();
  const json messages = {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Tell me a story"}}};
  const json request = {{"messages", messages}, {"max_tokens", 20}, {"temperature", 0}};
  const HttpReply r = post(*c, "/v1/chat/completions", request.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json got = r.json();
  EXPECT_EQ(got.at("object"), "chat.completion");
  EXPECT_TRUE(got.at("id").get<std::string>().starts_with("chatcmpl-"));
  EXPECT_EQ(got.at("choices")[0].at("message").at("role"), "assistant");
  // The same as completing the rendered prompt (BOS comes from the template there, from the tokenizer here).
  const std::string rendered =
      "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
      "Tell me a story<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
  const HttpReply plain = post(*c, "/v1/completions", json{{"prompt", rendered}, {"max_tokens", 20}, {"temperature", 0}}.dump());
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(got.at("choices")[0].at("message").at("content"), plain.json().at("choices")[0].at("text"));
  EXPECT_EQ(got.at("usage"), plain.json().at("usage"));
  json stream = request;
  stream["stream"] = true;
  const HttpReply s = post(*c, "/v1/chat/completions", stream.dump());
  ASSERT_EQ(s.status, 200) << s.body;
  json finish;
  EXPECT_EQ(streamed_text(s.body, true, &finish), got.at("choices")[0].at("message").at("content").get<std::string>());
  EXPECT_EQ(finish, got.at("choices")[0].at("finish_reason"));
  EXPECT_EQ(server->stop(), 0);
}

TEST_F(ServeE2E, BadInputAndAuthGetErrorObjectsAndTheServerKeepsServing) {
  auto server = serve({"-c", "64", "--api-key", "sesame", "--max-body", "4K"});
  {
    auto anonymous = server->client();
    const HttpReply r = post(*anonymous, "/v1/completions", R"({"prompt": "Hi"})");
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.json().at("error").at("type"), "authentication_error") << r.body;
    EXPECT_EQ(get(*anonymous, "/v1/models").status, 401);
    EXPECT_EQ(get(*anonymous, "/health").status, 200);
    auto wrong = server->client("open");
    EXPECT_EQ(post(*wrong, "/v1/completions", R"({"prompt": "Hi"})").status, 401);
  }
  auto c = server->client("sesame");
  const std::string long_prompt(400, 'x');
  const std::vector<std::tuple<std::string, std::string, int, std::string>> cases = {
      {"/v1/completions", "{not json", 400, "not valid JSON"},
      {"/v1/completions", R"({"prompt": 5})", 400, "'prompt' must be"},
      {"/v1/completions", R"({"prompt": "a", "max_tokens": 0})", 400, "'max_tokens' must be at least 1"},
      {"/v1/completions", R"({"prompt": "a", "max_tokens": "8"})", 400, "'max_tokens' must be an integer"},
      {"/v1/completions", R"({"prompt": "a", "temperature": NaN})", 400, "not valid JSON"},
      {"/v1/completions", R"({"prompt": "a", "n": 3})", 400, "'n' must be 1"},
      {"/v1/completions", R"({"prompt": "a", "presence_penalty": 3})", 400, "presence_penalty"},
      {"/v1/completions", json{{"prompt", long_prompt}}.dump(), 400, "context"},
      {"/v1/completions", R"({"prompt": "a", "max_tokens": 100})", 400, "over the context"},
      {"/v1/completions", R"({"prompt": [1, 5000]})", 400, "outside the vocabulary"},
      {"/v1/completions", "{\"prompt\": \"" + std::string(5000, 'y') + "\"}", 413, "size limit"},
      {"/v1/nothing", "{}", 404, "no such endpoint"},
  };
  for (const auto& [path, body, status, message] : cases) {
    const HttpReply r = post(*c, path, body);
    EXPECT_EQ(r.status, status) << body.substr(0, 80) << " -> " << r.body;
    json err;
    ASSERT_NO_THROW(err = r.json()) << r.body;
    EXPECT_NE(err.at("error").at("message").get<std::string>().find(message), std::string::npos) << r.body;
    EXPECT_TRUE(err.at("error").contains("type"));
  }
  const HttpReply ok = post(*c, "/v1/completions", R"({"prompt": "Hello", "max_tokens": 3, "temperature": 0})");
  ASSERT_EQ(ok.status, 200) << ok.body;
  const json models = get(*c, "/v1/models").json();
  EXPECT_EQ(models.at("data")[0].at("id"), "podkv-ref");
  // httplib logs (and so counts) a request after its response is sent: the last one's count can
  // reach /metrics a moment after its reply.
  const std::string ok_count = "podkv_requests_total{endpoint=\"/v1/completions\",status=\"200\"}";
  std::string metrics = get(*c, "/metrics").body;
  for (int tries = 0; tries < 100 && metric(metrics, ok_count) < 1; ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    metrics = get(*c, "/metrics").body;
  }
  EXPECT_EQ(metric(metrics, "podkv_requests_total{endpoint=\"/v1/completions\",status=\"400\"}"), 10) << metrics;
  EXPECT_EQ(metric(metrics, "podkv_requests_total{endpoint=\"/v1/completions\",status=\"401\"}"), 2) << metrics;
  EXPECT_EQ(metric(metrics, "podkv_requests_total{endpoint=\"/v1/completions\",status=\"413\"}"), 1) << metrics;
  EXPECT_EQ(metric(metrics, "podkv_requests_total{endpoint=\"/v1/completions\",status=\"200\"}"), 1) << metrics;
  EXPECT_EQ(metric(metrics, "podkv_generation_tokens_total"), ok.json().at("usage").at("completion_tokens"));
  EXPECT_EQ(metric(metrics, "podkv_prompt_tokens_total"), ok.json().at("usage").at("prompt_tokens"));
  EXPECT_EQ(metric(metrics, "podkv_time_to_first_token_seconds_count"), 1);
  EXPECT_EQ(server->stop(), 0);
  EXPECT_NE(server->log().find("POST /v1/completions 200 cmpl-"), std::string::npos) << server->log();
}

TEST_F(ServeE2E, OverloadGets503AndADisconnectGivesThePagesBack) {
  // Room for about two requests' KV pages at a time, and two waiting.
  // f32 entries of the reference model: 6 layers x 4 KV heads x 2 streams x 16 tokens x 128 bytes = 96 KiB per
  // 16 tokens; a request of ~13 + 200 tokens peaks at 14 pages per stream (1.3 MiB): two fit.
  auto server = serve({"--parallel", "4", "--queue", "2", "--kv-memory", "2800K", "--kv-dtype", "f32"});
  std::vector<std::future<HttpReply>> replies;
  for (int i = 0; i < 12; ++i)
    replies.push_back(std::async(std::launch::async, [&server, i] {
      auto c = server->client();
      return post(*c, "/v1/completions",
                  json{{"prompt", "The story of number " + std::to_string(i)}, {"max_tokens", 200}, {"temperature", 0}}
                      .dump());
    }));
  int ok = 0, busy = 0;
  for (auto& f : replies) {
    const HttpReply r = f.get();
    if (r.status == 200) {
      ++ok;
      EXPECT_LE(r.json().at("usage").at("completion_tokens").get<int>(), 200);
    } else {
      ++busy;
      EXPECT_EQ(r.status, 503) << r.body;
      EXPECT_EQ(httplib::detail::get_header_value(r.headers, "Retry-After", 0, ""), std::string("1"));
      EXPECT_NE(r.body.find("--queue"), std::string::npos) << r.body;
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(busy, 0);
  EXPECT_EQ(ok + busy, 12);

  auto c = server->client();
  const std::string before = get(*c, "/metrics").body;
  EXPECT_EQ(metric(before, "podkv_kv_bytes_reserved"), 0) << before;
  // A stream read for a while, then dropped by its client.
  {
    httplib::Client s("127.0.0.1", server->port());
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = R"({"prompt": "A long tale", "max_tokens": 400, "stream": true, "temperature": 0})";
    req.set_header("Content-Type", "application/json");
    size_t received = 0;
    bool saw_pages = false;
    req.content_receiver = [&](const char*, size_t n, uint64_t, uint64_t) {
      received += n;
      if (received > 500 && !saw_pages) {
        auto m = server->client();
        saw_pages = metric(get(*m, "/metrics").body, "podkv_kv_bytes_reserved") > 0;
      }
      return received < 1500;  // then hang up
    };
    s.send(req);
    EXPECT_TRUE(saw_pages);
  }
  double reserved = -1, running = -1;
  for (int i = 0; i < 100; ++i) {
    const std::string m = get(*c, "/metrics").body;
    reserved = metric(m, "podkv_kv_bytes_reserved");
    running = metric(m, "podkv_sequences_running");
    if (reserved == 0 && running == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(reserved, 0);
  EXPECT_EQ(running, 0);
  EXPECT_EQ(post(*c, "/v1/completions", R"({"prompt": "Still there?", "max_tokens": 4})").status, 200);
  EXPECT_EQ(server->stop(), 0);
  EXPECT_NE(server->log().find("finish=cancelled"), std::string::npos) << server->log();
}

TEST_F(ServeE2E, FixtureModelWithoutTokenizerServesTokenIds) {
  const fs::path fixture = kFixtures / "llama_gqa";
  ServeProcess server({"-m", fixture.string(), "-t", "1"}, tmp_ / "io");
  ASSERT_TRUE(server.started()) << server.log();
  auto c = server.client();
  const CliResult g = run({"generate", "-m", fixture.string(), "--ids", "1,7,42,9", "-n", "6", "--json", "-t", "1"});
  ASSERT_EQ(g.exit_code, 0) << g;
  const HttpReply r = post(*c, "/v1/completions", R"({"prompt": [1, 7, 42, 9], "max_tokens": 6, "temperature": 0})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json().at("choices")[0].at("token_ids"), json::parse(g.out).at("generated_ids"));
  EXPECT_EQ(r.json().at("model"), "llama_gqa");
  const HttpReply text = post(*c, "/v1/completions", R"({"prompt": "words"})");
  EXPECT_EQ(text.status, 400);
  EXPECT_NE(text.body.find("no tokenizer"), std::string::npos) << text.body;
  EXPECT_EQ(post(*c, "/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}]})").status, 400);
  EXPECT_EQ(server.stop(), 0);
}

}  // namespace
}  // namespace podkv::clitest
