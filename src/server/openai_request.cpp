#include "server/openai_request.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace podkv {

using nlohmann::json;

std::string ApiError::type() const {
  if (!type_.empty()) return type_;
  if (status_ == 401) return "authentication_error";
  if (status_ >= 500) return "server_error";
  return "invalid_request_error";
}

json error_body(const ApiError& e) {
  json err = {{"message", e.what()}, {"type", e.type()}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param().empty()) err["param"] = e.param();
  return {{"error", err}};
}

namespace {

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

[[noreturn]] void bad(const std::string& field, const std::string& message) {
  throw ApiError(400, "'" + field + "' " + message, field);
}

[[noreturn]] void wrong_type(const std::string& field, const char* want, const json& v) {
  bad(field, std::string("must be ") + want + ", got " + type_name(v));
}

// The field when present and not null.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

double number(const json& body, const char* name, double fallback) {
  const json* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) wrong_type(name, "a number", *v);
  const double x = v->get<double>();
  if (!std::isfinite(x)) bad(name, "must be a finite number");
  return x;
}

int64_t integer(const json& body, const char* name, int64_t fallback) {
  const json* v = field(body, name);
  if (v == nullptr) return fallback;
  if (v->is_number_float()) {
    // 16.0 is an integer to JSON clients that only have doubles.
    const double x = v->get<double>();
    if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 9e15) return static_cast<int64_t>(x);
    wrong_type(name, "an integer", *v);
  }
  if (!v->is_number_integer()) wrong_type(name, "an integer", *v);
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad(name, "is too large");
  return v->get<int64_t>();
}

bool boolean(const json& body, const char* name, bool fallback) {
  const json* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) wrong_type(name, "a boolean", *v);
  return v->get<bool>();
}

std::vector<int32_t> token_ids(const json& a, const std::string& name) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < a.size(); ++i) {
    const json& t = a[i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > std::numeric_limits<int32_t>::max())
      bad(name + "[" + std::to_string(i) + "]", "must be a token id (an integer >= 0)");
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return ids;
}

void parse_prompt(const json& body, CompletionRequest& r) {
  const json* p = field(body, "prompt");
  if (p == nullptr) bad("prompt", "is required");
  if (p->is_string()) {
    r.prompt_text = p->get<std::string>();
    return;
  }
  if (!p->is_array()) wrong_type("prompt", "a string, an array of token ids, or a list of one of these", *p);
  if (p->empty()) bad("prompt", "must not be an empty array");
  if ((*p)[0].is_number()) {
    r.prompt_ids = token_ids(*p, "prompt");
    r.prompt_is_ids = true;
    return;
  }
  if (p->size() > 1) bad("prompt", "holds " + std::to_string(p->size()) + " prompts; podkv serves one prompt per request");
  const json& one = (*p)[0];
  if (one.is_string()) {
    r.prompt_text = one.get<std::string>();
  } else if (one.is_array() && !one.empty()) {
    r.prompt_ids = token_ids(one, "prompt[0]");
    r.prompt_is_ids = true;
  } else {
    wrong_type("prompt[0]", "a string or a non-empty array of token ids", one);
  }
}

void parse_messages(const json& body, CompletionRequest& r) {
  const json* m = field(body, "messages");
  if (m == nullptr) bad("messages", "is required");
  if (!m->is_array()) wrong_type("messages", "an array", *m);
  if (m->empty()) bad("messages", "must hold at least one message");
  for (size_t i = 0; i < m->size(); ++i) {
    const std::string name = "messages[" + std::to_string(i) + "]";
    const json& msg = (*m)[i];
    if (!msg.is_object()) wrong_type(name, "an object", msg);
    ChatMessage out;
    const json* role = field(msg, "role");
    if (role == nullptr) bad(name + ".role", "is required");
    if (!role->is_string()) wrong_type(name + ".role", "a string", *role);
    out.role = role->get<std::string>();
    if (out.role == "developer") out.role = "system";  // the newer name of the system role
    if (out.role != "system" && out.role != "user" && out.role != "assistant")
      bad(name + ".role", "must be system, user or assistant, got '" + out.role + "'");
    const json* content = field(msg, "content");
    if (content == nullptr) {
      if (out.role != "assistant") bad(name + ".content", "is required");
    } else if (content->is_string()) {
      out.content = content->get<std::string>();
    } else if (content->is_array()) {
      // Content parts: only text parts, joined.
      for (size_t k = 0; k < content->size(); ++k) {
        const json& part = (*content)[k];
        const std::string pname = name + ".content[" + std::to_string(k) + "]";
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          bad(pname, "must be a text part {\"type\": \"text\", \"text\": ...} (podkv serves text only)");
        out.content += part["text"].get<std::string>();
      }
    } else {
      wrong_type(name + ".content", "a string or an array of text parts", *content);
    }
    r.messages.push_back(std::move(out));
  }
}

// Fields of the API podkv does not implement: accepted at their neutral value, refused otherwise.
void refuse_unsupported(const json& body) {
  if (const json* n = field(body, "n"); n != nullptr && !(n->is_number() && n->get<double>() == 1))
    bad("n", "must be 1: podkv returns one choice per request");
  if (const json* b = field(body, "best_of"); b != nullptr && !(b->is_number() && b->get<double>() == 1))
    bad("best_of", "must be 1: podkv returns one choice per request");
  if (boolean(body, "echo", false)) bad("echo", "is not supported");
  if (const json* l = field(body, "logprobs"); l != nullptr && !(l->is_boolean() && !l->get<bool>()) &&
                                                !(l->is_number() && l->get<double>() == 0))
    bad("logprobs", "is not supported");
  if (const json* l = field(body, "top_logprobs"); l != nullptr && !(l->is_number() && l->get<double>() == 0))
    bad("top_logprobs", "is not supported");
  if (const json* l = field(body, "logit_bias"); l != nullptr && !(l->is_object() && l->empty()))
    bad("logit_bias", "is not supported");
  if (const json* s = field(body, "suffix"); s != nullptr && !(s->is_string() && s->get<std::string>().empty()))
    bad("suffix", "is not supported");
  for (const char* name : {"tools", "functions"})
    if (const json* t = field(body, name); t != nullptr && !(t->is_array() && t->empty()))
      bad(name, "is not supported (podkv serves text only)");
  if (const json* f = field(body, "response_format"); f != nullptr && !(f->is_object() && f->value("type", "") == "text"))
    bad("response_format", "is not supported (only {\"type\": \"text\"})");
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& text, bool chat) {
  json body;
  try {
    body = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e400
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw ApiError(400, std::string("the request body must be a JSON object, got ") + type_name(body));
  CompletionRequest r;
  r.chat = chat;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) wrong_type("model", "a string", *m);
    r.model = m->get<std::string>();
  }
  if (chat) {
    if (body.contains("prompt")) bad("prompt", "belongs to /v1/completions; chat requests give 'messages'");
    parse_messages(body, r);
  } else {
    if (body.contains("messages")) bad("messages", "belongs to /v1/chat/completions; completions give 'prompt'");
    parse_prompt(body, r);
  }
  refuse_unsupported(body);
  const char* max_name = field(body, "max_completion_tokens") != nullptr ? "max_completion_tokens" : "max_tokens";
  if (field(body, max_name) != nullptr) {
    const int64_t m = integer(body, max_name, 0);
    if (m < 1) bad(max_name, "must be at least 1, got " + std::to_string(m));
    r.max_tokens = m;
  }
  SamplingParams& s = r.sampling;
  s.temperature = static_cast<float>(number(body, "temperature", 1.0));
  if (s.temperature < 0 || s.temperature > 100) bad("temperature", "must be in [0, 100] (0 = greedy)");
  s.top_p = static_cast<float>(number(body, "top_p", 1.0));
  if (!(s.top_p > 0 && s.top_p <= 1)) bad("top_p", "must be in (0, 1]");
  const int64_t top_k = integer(body, "top_k", 0);
  if (top_k < 0 || top_k > std::numeric_limits<int32_t>::max()) bad("top_k", "must be >= 0 (0 = off)");
  s.top_k = static_cast<int>(top_k);
  s.min_p = static_cast<float>(number(body, "min_p", 0.0));
  if (!(s.min_p >= 0 && s.min_p <= 1)) bad("min_p", "must be in [0, 1]");
  s.repetition_penalty = static_cast<float>(number(body, "repetition_penalty", 1.0));
  if (!(s.repetition_penalty > 0 && s.repetition_penalty <= 100)) bad("repetition_penalty", "must be in (0, 100] (1 = off)");
  s.presence_penalty = static_cast<float>(number(body, "presence_penalty", 0.0));
  if (!(s.presence_penalty >= -2 && s.presence_penalty <= 2)) bad("presence_penalty", "must be in [-2, 2] (0 = off)");
  s.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", 0.0));
  if (!(s.frequency_penalty >= -2 && s.frequency_penalty <= 2)) bad("frequency_penalty", "must be in [-2, 2] (0 = off)");
  if (field(body, "seed") != nullptr) {
    s.seed = static_cast<uint64_t>(integer(body, "seed", 0));
    r.seed_given = true;
  }
  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      r.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string()) wrong_type("stop[" + std::to_string(i) + "]", "a string", (*stop)[i]);
        r.stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      wrong_type("stop", "a string or an array of strings", *stop);
    }
    for (const std::string& s : r.stop)
      if (s.empty()) bad("stop", "must not hold an empty string");
  }
  r.stream = boolean(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    if (const json* u = field(*so, "include_usage")) {
      if (!u->is_boolean()) wrong_type("stream_options.include_usage", "a boolean", *u);
      r.include_usage = u->get<bool>();
    }
  }
  r.return_token_ids = boolean(body, "return_token_ids", false);
  return r;
}

}  // namespace podkv
