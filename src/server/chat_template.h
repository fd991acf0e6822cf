// Chat templates of the usual model families, rendered by small C++
// formatters instead of a Jinja engine: a model's template (tokenizer_config.json
// `chat_template`, GGUF `tokenizer.chat_template`) is recognised by the marker
// tokens it writes, and `--chat-template NAME|FILE` chooses one by name.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace podkv {

class Model;

enum class ChatFormat { Llama2, Llama3, Mistral, ChatML, Zephyr };

struct ChatMessage {
  std::string role;  // system, user or assistant
  std::string content;
};

struct ChatTemplate {
  ChatFormat format = ChatFormat::ChatML;
  std::string bos_token;  // the text the template writes for bos_token / eos_token
  std::string eos_token;
  // Qwen2's ChatML adds "You are a helpful assistant." when no system message is given.
  std::string default_system;

  // The prompt text for `messages` followed by the assistant's turn header.
  // The text carries the template's special tokens (BOS included), so it is
  // tokenized without adding BOS. Throws Error naming the message at fault
  // (unknown role, Llama 2 / Mistral turns that do not alternate user/assistant).
  std::string render(const std::vector<ChatMessage>& messages) const;
};

// "llama2", "llama3", "mistral", "chatml", "zephyr"; nullopt for another name.
std::optional<ChatFormat> chat_format_from_name(const std::string& name);
const char* chat_format_name(ChatFormat format);
const char* known_chat_formats();

// The family of a Jinja chat template, from the markers it writes; nullopt when
// none matches.
std::optional<ChatFormat> detect_chat_format(const std::string& jinja);

// A template of `format`; bos/eos texts default to the family's usual ones.
ChatTemplate make_chat_template(ChatFormat format, const std::string& bos_token = "", const std::string& eos_token = "");

// The Jinja chat template shipped with a model (tokenizer_config.json beside a
// model directory's weights, or the GGUF key tokenizer.chat_template), with
// its bos/eos token texts; empty template text when the model has none.
struct ModelChatTemplate {
  std::string jinja;
  std::string bos_token, eos_token;
  std::string source;  // file it came from, for messages
};
ModelChatTemplate read_model_chat_template(const Model& model);

// The template the server uses: `option` (--chat-template: a name, or a file
// holding a Jinja template) when given, else the model's. Throws Error when the
// option names neither a known format nor a file of a known family. Without
// the option, a model with no template or one of another family serves
// completions only: `chat` is empty and `unavailable` says why and what to do.
struct ResolvedChatTemplate {
  std::optional<ChatTemplate> chat;
  std::string unavailable;
};
ResolvedChatTemplate resolve_chat_template(const std::string& option, const Model& model);

}  // namespace podkv
