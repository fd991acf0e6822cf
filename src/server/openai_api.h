// The OpenAI-shaped side of the server, apart from HTTP: turns a checked
// request into prompt ids and generation options (tokenizer, chat template,
// context and max_tokens rules), and builds the response objects: the whole
// completion, the server-sent-event chunks, /v1/models, and the errors.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "model/config.h"
#include "server/chat_template.h"
#include "server/openai_request.h"
#include "server/serving_engine.h"
#include "tokenizer/tokenizer.h"

namespace podkv {

struct ApiConfig {
  std::string model_id;                 // what /v1/models lists and responses name
  int64_t context = 4096;               // prompt + generated tokens of one request
  int64_t default_max_tokens = 16;      // /v1/completions without max_tokens (the OpenAI default);
                                        // chat requests default to the rest of the context
  std::optional<ChatTemplate> chat;     // none: chat requests are refused with `chat_unavailable`
  std::string chat_unavailable;
};

// A request ready for the engine.
struct PreparedRequest {
  CompletionRequest api;
  GenerateRequest generate;
  std::string id;        // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;   // unix seconds
};

class OpenAiApi {
 public:
  // `tokenizer` may be null (prompts as token ids only).
  OpenAiApi(const Tokenizer* tokenizer, const ModelConfig& model, ApiConfig config);

  // Parses, checks and tokenizes a body. Throws ApiError (400) naming the field.
  PreparedRequest prepare(const std::string& body, bool chat) const;

  nlohmann::json models() const;
  // The non-streamed response.
  nlohmann::json response(const PreparedRequest& r, const RequestOutcome& outcome) const;
  // Streamed: chat's first chunk (the assistant role), text chunks, the
  // chunk with finish_reason, and the usage chunk (stream_options.include_usage).
  nlohmann::json role_chunk(const PreparedRequest& r) const;
  nlohmann::json text_chunk(const PreparedRequest& r, const std::string& text, const std::vector<int32_t>& ids) const;
  nlohmann::json finish_chunk(const PreparedRequest& r, const RequestOutcome& outcome) const;
  nlohmann::json usage_chunk(const PreparedRequest& r, const RequestOutcome& outcome) const;

  const ApiConfig& config() const { return config_; }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }

 private:
  nlohmann::json chunk_base(const PreparedRequest& r) const;
  nlohmann::json choice_delta(const PreparedRequest& r, const std::string& text) const;

  const Tokenizer* tokenizer_;
  ModelConfig model_;
  ApiConfig config_;
};

// "data: {json}\n\n", and the stream's end "data: [DONE]\n\n".
std::string sse_event(const nlohmann::json& j);
std::string sse_done();
// JSON text with invalid UTF-8 replaced (generated text may hold any bytes).
std::string dump_json(const nlohmann::json& j);

}  // namespace podkv
