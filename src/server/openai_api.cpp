#include "server/openai_api.h"

#include <chrono>
#include <random>

namespace podkv {

using nlohmann::json;

namespace {

std::string random_id(const char* prefix) {
  static const char* hex = "0123456789abcdef";
  std::random_device rd;
  std::mt19937_64 rng((static_cast<uint64_t>(rd()) << 32) ^ rd());
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += hex[rng() % 16];
  return id;
}

json usage_json(const RequestOutcome& o) {
  const int64_t completion = static_cast<int64_t>(o.generated_ids.size());
  return {{"prompt_tokens", o.prompt_tokens},
          {"completion_tokens", completion},
          {"total_tokens", o.prompt_tokens + completion}};
}

json finish_reason(const RequestOutcome& o) {
  if (o.finish_reason.empty()) return nullptr;
  return o.finish_reason;
}

}  // namespace

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
std::string sse_event(const json& j) { return "data: " + dump_json(j) + "\n\n"; }
std::string sse_done() { return "data: [DONE]\n\n"; }

OpenAiApi::OpenAiApi(const Tokenizer* tokenizer, const ModelConfig& model, ApiConfig config)
    : tokenizer_(tokenizer), model_(model), config_(std::move(config)) {}

PreparedRequest OpenAiApi::prepare(const std::string& body, bool chat) const {
  PreparedRequest r;
  r.api = parse_completion_request(body, chat);
  const CompletionRequest& a = r.api;
  std::vector<int32_t>& ids = r.generate.prompt_ids;
  if (chat) {
    if (!config_.chat) throw ApiError(400, "chat completions are not available: " + config_.chat_unavailable, "messages");
    if (tokenizer_ == nullptr) throw ApiError(400, "the model has no tokenizer: chat needs one", "messages");
    std::string text;
    try {
      text = config_.chat->render(a.messages);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "messages");
    }
    ids = tokenizer_->encode(text, false);  // the template writes BOS itself
  } else if (a.prompt_is_ids) {
    ids = a.prompt_ids;
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] >= model_.vocab_size)
        throw ApiError(400, "'prompt' token id " + std::to_string(ids[i]) + " (at " + std::to_string(i) +
                                ") is outside the vocabulary (" + std::to_string(model_.vocab_size) + " tokens)",
                       "prompt");
  } else {
    if (tokenizer_ == nullptr)
      throw ApiError(400, "the model has no tokenizer: give 'prompt' as an array of token ids", "prompt");
    ids = tokenizer_->encode(a.prompt_text, true);
  }
  if (ids.empty()) {
    // An empty prompt starts from BOS alone (as podkv generate does).
    const int bos = tokenizer_ != nullptr && tokenizer_->bos_id() >= 0 ? tokenizer_->bos_id() : model_.bos_token_id;
    if (bos < 0) throw ApiError(400, "the prompt is empty and the model has no BOS token", chat ? "messages" : "prompt");
    ids.push_back(bos);
  }
  const int64_t prompt = static_cast<int64_t>(ids.size());
  const char* prompt_field = chat ? "messages" : "prompt";
  if (prompt >= config_.context)
    throw ApiError(400, "the prompt has " + std::to_string(prompt) + " tokens, and the context is " +
                            std::to_string(config_.context) + " tokens (prompt + completion, -c): no room for a completion",
                   prompt_field);
  const int64_t room = config_.context - prompt;
  int64_t max_tokens = chat ? room : std::min(config_.default_max_tokens, room);
  if (a.max_tokens) {
    if (prompt + *a.max_tokens > config_.context)
      throw ApiError(400, "the prompt (" + std::to_string(prompt) + " tokens) + max_tokens (" +
                              std::to_string(*a.max_tokens) + ") is over the context of " +
                              std::to_string(config_.context) + " tokens (-c); ask for at most " +
                              std::to_string(room) + " tokens",
                     "max_tokens");
    max_tokens = *a.max_tokens;
  }
  GenerateOptions& g = r.generate.options;
  g.max_new_tokens = static_cast<int>(max_tokens);
  g.sampling = a.sampling;
  if (!a.seed_given) {
    std::random_device rd;
    g.sampling.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  g.stop_strings = a.stop;
  g.stop_at_eos = true;
  g.eos_ids.assign(model_.eos_token_ids.begin(), model_.eos_token_ids.end());
  r.id = random_id(chat ? "chatcmpl-" : "cmpl-");
  r.created = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  return r;
}

json OpenAiApi::models() const {
  return {{"object", "list"},
          {"data", json::array({{{"id", config_.model_id},
                                 {"object", "model"},
                                 {"created", 0},
                                 {"owned_by", "podkv"},
                                 {"context_length", config_.context}}})}};
}

json OpenAiApi::response(const PreparedRequest& r, const RequestOutcome& o) const {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason(o)}};
  if (r.api.chat) choice["message"] = {{"role", "assistant"}, {"content", o.text}};
  else choice["text"] = o.text;
  if (r.api.return_token_ids || tokenizer_ == nullptr) choice["token_ids"] = o.generated_ids;
  return {{"id", r.id},
          {"object", r.api.chat ? "chat.completion" : "text_completion"},
          {"created", r.created},
          {"model", config_.model_id},
          {"choices", json::array({choice})},
          {"usage", usage_json(o)}};
}

json OpenAiApi::chunk_base(const PreparedRequest& r) const {
  json j = {{"id", r.id},
            {"object", r.api.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", r.created},
            {"model", config_.model_id}};
  if (r.api.include_usage) j["usage"] = nullptr;
  return j;
}

json OpenAiApi::choice_delta(const PreparedRequest& r, const std::string& text) const {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (r.api.chat) choice["delta"] = {{"content", text}};
  else choice["text"] = text;
  return choice;
}

json OpenAiApi::role_chunk(const PreparedRequest& r) const {
  json j = chunk_base(r);
  json choice = choice_delta(r, "");
  choice["delta"] = {{"role", "assistant"}, {"content", ""}};
  j["choices"] = json::array({choice});
  return j;
}

json OpenAiApi::text_chunk(const PreparedRequest& r, const std::string& text, const std::vector<int32_t>& ids) const {
  json j = chunk_base(r);
  json choice = choice_delta(r, text);
  if (r.api.return_token_ids || tokenizer_ == nullptr) choice["token_ids"] = ids;
  j["choices"] = json::array({choice});
  return j;
}

json OpenAiApi::finish_chunk(const PreparedRequest& r, const RequestOutcome& o) const {
  json j = chunk_base(r);
  json choice = choice_delta(r, "");
  if (r.api.chat) choice["delta"] = json::object();
  choice["finish_reason"] = finish_reason(o);
  j["choices"] = json::array({choice});
  return j;
}

json OpenAiApi::usage_chunk(const PreparedRequest& r, const RequestOutcome& o) const {
  json j = chunk_base(r);
  j["choices"] = json::array();
  j["usage"] = usage_json(o);
  return j;
}

}  // namespace podkv
