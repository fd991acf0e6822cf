// Request bodies of /v1/completions and /v1/chat/completions: the fields as
// the OpenAI API names them, and a 400 naming the field for everything else.
// Also the Prometheus text of the server's metrics.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "server/metrics.h"
#include "server/openai_request.h"

namespace podkv {
namespace {

using nlohmann::json;

CompletionRequest parse(const json& body, bool chat = false) { return parse_completion_request(body.dump(), chat); }

TEST(ServerRequest, CompletionFields) {
  const CompletionRequest r = parse({{"model", "m"},
                                     {"prompt", "Hello"},
                                     {"max_tokens", 7},
                                     {"temperature", 0.5},
                                     {"top_p", 0.9},
                                     {"top_k", 40},
                                     {"min_p", 0.05},
                                     {"seed", 123},
                                     {"stop", {"\n", "END"}},
                                     {"stream", true},
                                     {"stream_options", {{"include_usage", true}}},
                                     {"n", 1},
                                     {"presence_penalty", 0.5},
                                     {"frequency_penalty", -1.25},
                                     {"logprobs", nullptr},
                                     {"user", "someone"}});
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt_text, "Hello");
  EXPECT_FALSE(r.prompt_is_ids);
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, -1.25f);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.sampling.seed, 123u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);

  const CompletionRequest d = parse({{"prompt", "x"}});
  EXPECT_FALSE(d.max_tokens);
  EXPECT_FLOAT_EQ(d.sampling.temperature, 1.0f);  // the OpenAI default
  EXPECT_FALSE(d.seed_given);
  EXPECT_FALSE(d.stream);

  EXPECT_EQ(parse({{"prompt", {1, 2, 3}}}).prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_TRUE(parse({{"prompt", {{4, 5}}}}).prompt_is_ids);
  EXPECT_EQ(parse({{"prompt", {"only"}}}).prompt_text, "only");
  EXPECT_EQ(parse({{"prompt", "x"}, {"stop", "s"}}).stop, std::vector<std::string>{"s"});
  EXPECT_EQ(parse({{"prompt", "x"}, {"max_tokens", 3}, {"max_completion_tokens", 5}}).max_tokens, 5);
  EXPECT_EQ(parse({{"prompt", "x"}, {"max_tokens", 4.0}}).max_tokens, 4);
}

TEST(ServerRequest, ChatMessages) {
  const CompletionRequest r =
      parse({{"messages",
              {{{"role", "system"}, {"content", "S"}},
               {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}}},
               {{"role", "assistant"}, {"content", nullptr}},
               {{"role", "developer"}, {"content", "D"}}}}},
            true);
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[1].content, "ab");
  EXPECT_EQ(r.messages[2].content, "");
  EXPECT_EQ(r.messages[3].role, "system");
  EXPECT_TRUE(r.chat);
}

// Each bad body: the status, the param and a part of the message.
TEST(ServerRequest, BadBodiesNameTheField) {
  struct Case {
    std::string body;
    bool chat;
    std::string param, message;
  };
  const std::vector<Case> cases = {
      {"{not json", false, "", "not valid JSON"},
      {"[1]", false, "", "must be a JSON object"},
      {"{}", false, "prompt", "'prompt' is required"},
      {R"({"prompt": 3})", false, "prompt", "must be a string"},
      {R"({"prompt": []})", false, "prompt", "empty"},
      {R"({"prompt": ["a", "b"]})", false, "prompt", "one prompt per request"},
      {R"({"prompt": [1, -2]})", false, "prompt[1]", "token id"},
      {R"({"prompt": [1, 2.5]})", false, "prompt[1]", "token id"},
      {R"({"prompt": "a", "max_tokens": 0})", false, "max_tokens", "at least 1"},
      {R"({"prompt": "a", "max_tokens": -5})", false, "max_tokens", "at least 1"},
      {R"({"prompt": "a", "max_tokens": "10"})", false, "max_tokens", "must be an integer, got a string"},
      {R"({"prompt": "a", "max_tokens": 1.5})", false, "max_tokens", "must be an integer"},
      {R"({"prompt": "a", "temperature": "hot"})", false, "temperature", "must be a number"},
      {R"({"prompt": "a", "temperature": -1})", false, "temperature", "[0, 100]"},
      {R"({"prompt": "a", "temperature": 1e400})", false, "", "not valid JSON"},
      {R"({"prompt": "a", "top_p": 0})", false, "top_p", "(0, 1]"},
      {R"({"prompt": "a", "top_k": -1})", false, "top_k", ">= 0"},
      {R"({"prompt": "a", "min_p": 2})", false, "min_p", "[0, 1]"},
      {R"({"prompt": "a", "seed": "x"})", false, "seed", "integer"},
      {R"({"prompt": "a", "stop": 5})", false, "stop", "a string or an array"},
      {R"({"prompt": "a", "stop": ["ok", 1]})", false, "stop[1]", "a string"},
      {R"({"prompt": "a", "stop": [""]})", false, "stop", "empty"},
      {R"({"prompt": "a", "stream": "yes"})", false, "stream", "a boolean"},
      {R"({"prompt": "a", "stream_options": {"include_usage": 1}})", false, "stream_options.include_usage", "boolean"},
      {R"({"prompt": "a", "n": 2})", false, "n", "must be 1"},
      {R"({"prompt": "a", "best_of": 3})", false, "best_of", "must be 1"},
      {R"({"prompt": "a", "presence_penalty": 2.5})", false, "presence_penalty", "[-2, 2]"},
      {R"({"prompt": "a", "frequency_penalty": -3})", false, "frequency_penalty", "[-2, 2]"},
      {R"({"prompt": "a", "frequency_penalty": "1"})", false, "frequency_penalty", "a number"},
      {R"({"prompt": "a", "logprobs": 5})", false, "logprobs", "not supported"},
      {R"({"prompt": "a", "echo": true})", false, "echo", "not supported"},
      {R"({"prompt": "a", "logit_bias": {"1": 5}})", false, "logit_bias", "not supported"},
      {R"({"prompt": "a", "model": 7})", false, "model", "a string"},
      {R"({"prompt": "a", "messages": []})", false, "messages", "/v1/chat/completions"},
      {R"({"messages": "hi"})", true, "messages", "an array"},
      {R"({"messages": []})", true, "messages", "at least one"},
      {R"({"messages": [{"content": "x"}]})", true, "messages[0].role", "required"},
      {R"({"messages": [{"role": "robot", "content": "x"}]})", true, "messages[0].role", "system, user or assistant"},
      {R"({"messages": [{"role": "user"}]})", true, "messages[0].content", "required"},
      {R"({"messages": [{"role": "user", "content": 5}]})", true, "messages[0].content", "a string"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", true, "messages[0].content[0]", "text"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{}]})", true, "tools", "not supported"},
      {R"({"prompt": "a"})", true, "prompt", "/v1/completions"},
  };
  for (const Case& c : cases) {
    try {
      parse_completion_request(c.body, c.chat);
      ADD_FAILURE() << "accepted: " << c.body;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400) << c.body;
      EXPECT_EQ(e.param(), c.param) << c.body << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << c.body << ": " << e.what();
      const json err = error_body(e);
      EXPECT_EQ(err["error"]["type"], "invalid_request_error");
      EXPECT_EQ(err["error"]["message"], e.what());
    }
  }
}

TEST(ServerMetrics, PrometheusText) {
  Metrics m;
  m.count_request("/v1/completions", 200);
  m.count_request("/v1/completions", 200);
  m.count_request("/v1/completions", 400);
  m.add_tokens(10, 5);
  m.add_tokens(3, 2);
  m.observe_time_to_first_token(0.003);
  m.observe_time_to_first_token(0.2);
  m.observe_inter_token_latency(0.5);
  EngineGauges g;
  g.running = 2;
  g.waiting = 1;
  g.kv_bytes_in_use = 100;
  g.kv_bytes_reserved = 4096;
  g.kv_bytes_free = 8192;
  g.kv_bytes_budget = 12288;
  g.dense_kv_bytes = 300;
  const std::string text = m.render(g);
  auto has = [&](const std::string& line) {
    EXPECT_NE(text.find(line + "\n"), std::string::npos) << "missing: " << line << "\n" << text;
  };
  has("podkv_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 2");
  has("podkv_requests_total{endpoint=\"/v1/completions\",status=\"400\"} 1");
  has("podkv_prompt_tokens_total 13");
  has("podkv_generation_tokens_total 7");
  has("# TYPE podkv_time_to_first_token_seconds histogram");
  has("podkv_time_to_first_token_seconds_bucket{le=\"0.005\"} 1");
  has("podkv_time_to_first_token_seconds_bucket{le=\"0.1\"} 1");
  has("podkv_time_to_first_token_seconds_bucket{le=\"0.25\"} 2");
  has("podkv_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2");
  has("podkv_time_to_first_token_seconds_count 2");
  has("podkv_inter_token_latency_seconds_bucket{le=\"0.25\"} 0");
  has("podkv_inter_token_latency_seconds_bucket{le=\"0.5\"} 1");
  has("podkv_inter_token_latency_seconds_sum 0.5");
  has("podkv_sequences_running 2");
  has("podkv_sequences_waiting 1");
  has("podkv_kv_bytes_in_use 100");
  has("podkv_kv_bytes_reserved 4096");
  has("podkv_kv_bytes_free 8192");
  has("podkv_kv_dense_equivalent_bytes 300");
}

}  // namespace
}  // namespace podkv
