// The request bodies of POST /v1/completions and /v1/chat/completions, as the
// OpenAI API names their fields, checked field by field: every refusal is an
// ApiError whose message and `param` name the field at fault, and which the
// HTTP layer turns into an OpenAI-style error object.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "sampling/sampler.h"
#include "server/chat_template.h"
#include "util/error.h"

namespace podkv {

// An error answered with an HTTP status and an OpenAI error object
// {"error": {"message", "type", "param", "code"}}.
class ApiError : public Error {
 public:
  ApiError(int status, const std::string& message, std::string param = "", std::string type = "")
      : Error(message), status_(status), param_(std::move(param)), type_(std::move(type)) {}
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  // invalid_request_error (4xx), authentication_error (401), server_error (5xx) unless given.
  std::string type() const;

 private:
  int status_;
  std::string param_;
  std::string type_;
};

// {"error": {...}} for `e`.
nlohmann::json error_body(const ApiError& e);

struct CompletionRequest {
  bool chat = false;
  std::string model;                  // as sent (may be empty)
  // /v1/completions: the prompt as text, or as token ids when prompt_is_ids.
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
  bool prompt_is_ids = false;
  // /v1/chat/completions
  std::vector<ChatMessage> messages;
  std::optional<int64_t> max_tokens;  // max_completion_tokens or max_tokens; absent = the default
  SamplingParams sampling;            // temperature defaults to 1 as in the OpenAI API
  bool seed_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  bool return_token_ids = false;      // podkv's own: choices[].token_ids
};

// Parses and checks a request body. Throws ApiError(400) naming the field.
CompletionRequest parse_completion_request(const std::string& body, bool chat);

}  // namespace podkv
