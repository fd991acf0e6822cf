#include "server/chat_template.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/gguf.h"
#include "model/model.h"
#include "util/error.h"

namespace podkv {

namespace fs = std::filesystem;

namespace {

std::string strip(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return {};
  const size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

void check_role(const ChatMessage& m, size_t i) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant")
    throw Error("messages[" + std::to_string(i) + "].role: must be system, user or assistant, got '" + m.role + "'");
}

// Llama 2 and Mistral: the system message (if any) goes into the first user
// turn, and the turns must then alternate user/assistant starting with user.
std::vector<ChatMessage> fold_system(const std::vector<ChatMessage>& messages, const char* family,
                                     std::string* system) {
  std::vector<ChatMessage> turns;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role == "system") {
      if (i != 0) throw Error("messages[" + std::to_string(i) + "]: " + family + " takes a system message only first");
      *system = messages[i].content;
      continue;
    }
    turns.push_back(messages[i]);
  }
  for (size_t t = 0; t < turns.size(); ++t) {
    const char* want = t % 2 == 0 ? "user" : "assistant";
    if (turns[t].role != want)
      throw Error(std::string("messages: ") + family + " needs turns alternating user/assistant starting with user (turn " +
                  std::to_string(t) + " is " + turns[t].role + ")");
  }
  return turns;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error(p.string() + ": cannot open");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// tokenizer_config.json writes special tokens as a string or as {"content": ...}.
std::string token_text(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return {};
}

}  // namespace

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages) const {
  if (messages.empty()) throw Error("messages: must hold at least one message");
  for (size_t i = 0; i < messages.size(); ++i) check_role(messages[i], i);
  std::string out;
  switch (format) {
    case ChatFormat::Llama2: {
      // Meta's template: BOS + "[INST] " + (<<SYS>> block in the first turn) + user + " [/INST]",
      // and " " + answer + " " + EOS after each assistant turn.
      std::string system;
      const auto turns = fold_system(messages, "llama2", &system);
      for (size_t t = 0; t < turns.size(); ++t) {
        std::string content = strip(turns[t].content);
        if (t == 0 && !system.empty()) content = "<<SYS>>\n" + strip(system) + "\n<</SYS>>\n\n" + content;
        if (turns[t].role == "user") out += bos_token + "[INST] " + content + " [/INST]";
        else out += " " + content + " " + eos_token;
      }
      break;
    }
    case ChatFormat::Mistral: {
      // Mistral v0.1/v0.2: BOS once, "[INST] user [/INST]", "answer" + EOS; a
      // system message is put before the first user message (as v0.3 does).
      std::string system;
      const auto turns = fold_system(messages, "mistral", &system);
      out += bos_token;
      for (size_t t = 0; t < turns.size(); ++t) {
        std::string content = turns[t].content;
        if (t == 0 && !system.empty()) content = system + "\n\n" + content;
        if (turns[t].role == "user") out += "[INST] " + content + " [/INST]";
        else out += content + eos_token;
      }
      break;
    }
    case ChatFormat::Llama3:
      out += bos_token;
      for (const ChatMessage& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + strip(m.content) + "<|eot_id|>";
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::ChatML:
      if (!default_system.empty() && messages[0].role != "system")
        out += "<|im_start|>system\n" + default_system + "<|im_end|>\n";
      for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      break;
    case ChatFormat::Zephyr:
      for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + eos_token + "\n";
      out += "<|assistant|>\n";
      break;
  }
  return out;
}

std::optional<ChatFormat> chat_format_from_name(const std::string& name) {
  if (name == "llama2") return ChatFormat::Llama2;
  if (name == "llama3") return ChatFormat::Llama3;
  if (name == "mistral") return ChatFormat::Mistral;
  if (name == "chatml") return ChatFormat::ChatML;
  if (name == "zephyr") return ChatFormat::Zephyr;
  return std::nullopt;
}

const char* chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::Llama2: return "llama2";
    case ChatFormat::Llama3: return "llama3";
    case ChatFormat::Mistral: return "mistral";
    case ChatFormat::ChatML: return "chatml";
    case ChatFormat::Zephyr: return "zephyr";
  }
  return "?";
}

const char* known_chat_formats() { return "llama2, llama3, mistral, chatml, zephyr"; }

std::optional<ChatFormat> detect_chat_format(const std::string& jinja) {
  if (contains(jinja, "<|start_header_id|>")) return ChatFormat::Llama3;
  if (contains(jinja, "<|im_start|>")) return ChatFormat::ChatML;
  if (contains(jinja, "[INST]")) return contains(jinja, "<<SYS>>") ? ChatFormat::Llama2 : ChatFormat::Mistral;
  if (contains(jinja, "<|user|>") && contains(jinja, "<|assistant|>")) return ChatFormat::Zephyr;
  return std::nullopt;
}

ChatTemplate make_chat_template(ChatFormat format, const std::string& bos_token, const std::string& eos_token) {
  ChatTemplate t;
  t.format = format;
  switch (format) {
    case ChatFormat::Llama3:
      t.bos_token = "<|begin_of_text|>";
      t.eos_token = "<|eot_id|>";
      break;
    case ChatFormat::ChatML:
      t.eos_token = "<|im_end|>";  // ChatML writes no BOS
      break;
    default:
      t.bos_token = "<s>";
      t.eos_token = "</s>";
  }
  if (!bos_token.empty() && format != ChatFormat::ChatML) t.bos_token = bos_token;
  if (!eos_token.empty()) t.eos_token = eos_token;
  return t;
}

ModelChatTemplate read_model_chat_template(const Model& model) {
  ModelChatTemplate out;
  if (const gguf::File* g = model.gguf_file()) {
    out.source = g->path() + " (tokenizer.chat_template)";
    if (g->find("tokenizer.chat_template") == nullptr) return out;
    out.jinja = g->get_string("tokenizer.chat_template");
    const gguf::MetaValue* tokens = g->find("tokenizer.ggml.tokens");
    auto text_of = [&](const char* key) -> std::string {
      const int64_t id = g->get_int_or(key, -1);
      if (tokens == nullptr || id < 0 || id >= static_cast<int64_t>(tokens->strings.size())) return {};
      return tokens->strings[static_cast<size_t>(id)];
    };
    out.bos_token = text_of("tokenizer.ggml.bos_token_id");
    out.eos_token = text_of("tokenizer.ggml.eos_token_id");
    return out;
  }
  const fs::path config = fs::path(model.path()) / "tokenizer_config.json";
  out.source = config.string();
  if (!fs::exists(config)) return out;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(config));
  } catch (const nlohmann::json::exception& e) {
    throw Error(config.string() + ": not valid JSON (" + e.what() + ")");
  }
  if (j.contains("chat_template")) {
    const nlohmann::json& t = j["chat_template"];
    if (t.is_string()) out.jinja = t.get<std::string>();
    // Newer files hold a list of named templates; the one named "default" is the chat one.
    else if (t.is_array())
      for (const auto& item : t)
        if (item.is_object() && item.value("name", "") == "default" && item.contains("template") &&
            item["template"].is_string())
          out.jinja = item["template"].get<std::string>();
  }
  if (j.contains("bos_token")) out.bos_token = token_text(j["bos_token"]);
  if (j.contains("eos_token")) out.eos_token = token_text(j["eos_token"]);
  return out;
}

ResolvedChatTemplate resolve_chat_template(const std::string& option, const Model& model) {
  const ModelChatTemplate own = read_model_chat_template(model);
  ResolvedChatTemplate out;
  std::string jinja = own.jinja;
  if (!option.empty()) {
    if (auto format = chat_format_from_name(option)) {
      out.chat = make_chat_template(*format, own.bos_token, own.eos_token);
      return out;
    }
    if (!fs::is_regular_file(option))
      throw Error("--chat-template: '" + option + "' is neither a template name (" + known_chat_formats() +
                  ") nor a file");
    jinja = read_file(option);
    if (!detect_chat_format(jinja))
      throw Error("--chat-template: " + option + " is not a template podkv recognises (it renders " +
                  known_chat_formats() + "); give one of these names");
  }
  const std::string hint = std::string("start the server with --chat-template NAME (") + known_chat_formats() + ")";
  if (jinja.empty()) {
    out.unavailable = "the model has no chat template: " + hint;
    return out;
  }
  const auto format = detect_chat_format(jinja);
  if (!format) {
    out.unavailable = "the model's chat template (" + own.source + ") is not one podkv recognises: " + hint;
    return out;
  }
  out.chat = make_chat_template(*format, own.bos_token, own.eos_token);
  // Qwen2's ChatML adds a default system message.
  if (*format == ChatFormat::ChatML && contains(jinja, "You are a helpful assistant."))
    out.chat->default_system = "You are a helpful assistant.";
  return out;
}

}  // namespace podkv
