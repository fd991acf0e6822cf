// Chat templates: each family renders what its Jinja template renders, the
// Hugging Face templates are recognised by family, and the server's choice
// (--chat-template NAME|FILE, else the model's) and its refusals.
#include <gtest/gtest.h>

#include <filesystem>

#include "cli_run.h"
#include "model/model.h"
#include "server/chat_template.h"
#include "util/error.h"

namespace podkv {
namespace {

using clitest::CliTest;
using clitest::write_text;
namespace fs = std::filesystem;

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Hello"}, {"assistant", "Hi there"}, {"user", "How are you?"}};

// Templates as the models ship them (tokenizer_config.json chat_template).
const char* kLlama2Jinja =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}{% set content = "
    "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + "
    "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}";
const char* kMistralJinja =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}";
const char* kLlama3Jinja =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
const char* kQwen2Jinja =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou "
    "are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
const char* kZephyrJinja =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}"
    "\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

TEST(ServerChatTemplate, EachFamilyRendersItsFormat) {
  EXPECT_EQ(make_chat_template(ChatFormat::Llama2).render(kConversation),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] How are you? [/INST]");
  EXPECT_EQ(make_chat_template(ChatFormat::Mistral).render(kConversation),
            "<s>[INST] Be brief.\n\nHello [/INST]Hi there</s>[INST] How are you? [/INST]");
  EXPECT_EQ(make_chat_template(ChatFormat::Llama3).render(kConversation),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(make_chat_template(ChatFormat::ChatML).render(kConversation),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
            "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(make_chat_template(ChatFormat::Zephyr).render(kConversation),
            "<|system|>\nBe brief.</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there</s>\n<|user|>\nHow are you?</s>\n"
            "<|assistant|>\n");
  // Without a system message; Llama 2 strips the content as its template does.
  EXPECT_EQ(make_chat_template(ChatFormat::Llama2).render({{"user", " Hi \n"}}), "<s>[INST] Hi [/INST]");
  ChatTemplate qwen = make_chat_template(ChatFormat::ChatML);
  qwen.default_system = "You are a helpful assistant.";
  EXPECT_EQ(qwen.render({{"user", "Hi"}}),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  // The model's own special-token texts.
  EXPECT_EQ(make_chat_template(ChatFormat::Zephyr, "<s>", "<|endoftext|>").render({{"user", "Hi"}}),
            "<|user|>\nHi<|endoftext|>\n<|assistant|>\n");
}

TEST(ServerChatTemplate, RefusesWhatTheTemplatesRefuse) {
  for (ChatFormat f : {ChatFormat::Llama2, ChatFormat::Mistral}) {
    const ChatTemplate t = make_chat_template(f);
    EXPECT_THROW(t.render({{"user", "a"}, {"user", "b"}}), Error) << chat_format_name(f);
    EXPECT_THROW(t.render({{"assistant", "a"}}), Error) << chat_format_name(f);
    EXPECT_THROW(t.render({{"user", "a"}, {"system", "late"}}), Error) << chat_format_name(f);
  }
  EXPECT_THROW(make_chat_template(ChatFormat::ChatML).render({}), Error);
  try {
    make_chat_template(ChatFormat::ChatML).render({{"tool", "x"}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("messages[0].role"), std::string::npos) << e.what();
  }
}

TEST(ServerChatTemplate, RecognisesTheShippedTemplates) {
  EXPECT_EQ(detect_chat_format(kLlama2Jinja), ChatFormat::Llama2);
  EXPECT_EQ(detect_chat_format(kMistralJinja), ChatFormat::Mistral);
  EXPECT_EQ(detect_chat_format(kLlama3Jinja), ChatFormat::Llama3);
  EXPECT_EQ(detect_chat_format(kQwen2Jinja), ChatFormat::ChatML);
  EXPECT_EQ(detect_chat_format(kZephyrJinja), ChatFormat::Zephyr);
  EXPECT_EQ(detect_chat_format("{{ messages }}"), std::nullopt);
  for (const char* name : {"llama2", "llama3", "mistral", "chatml", "zephyr"})
    EXPECT_EQ(chat_format_name(*chat_format_from_name(name)), std::string(name));
  EXPECT_EQ(chat_format_from_name("vicuna"), std::nullopt);
}

class ServerChatTemplateModel : public CliTest {
 protected:
  // The reference model's files, with `tokenizer_config` when not empty.
  fs::path model_with(const std::string& tokenizer_config) {
    const fs::path src = clitest::kSourceDir / "models" / "podkv-ref", dst = tmp_ / "model";
    fs::create_directories(dst);
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"}) fs::copy_file(src / f, dst / f);
    if (!tokenizer_config.empty()) write_text(dst / "tokenizer_config.json", tokenizer_config);
    return dst;
  }
};

TEST_F(ServerChatTemplateModel, ModelTemplateOptionAndRefusals) {
  {
    auto model = Model::load(model_with("").string());
    const ResolvedChatTemplate none = resolve_chat_template("", *model);
    EXPECT_FALSE(none.chat);
    EXPECT_NE(none.unavailable.find("--chat-template"), std::string::npos) << none.unavailable;
    const ResolvedChatTemplate named = resolve_chat_template("zephyr", *model);
    ASSERT_TRUE(named.chat);
    EXPECT_EQ(named.chat->format, ChatFormat::Zephyr);
    write_text(tmp_ / "qwen.jinja", kQwen2Jinja);
    const ResolvedChatTemplate file = resolve_chat_template((tmp_ / "qwen.jinja").string(), *model);
    ASSERT_TRUE(file.chat);
    EXPECT_EQ(file.chat->format, ChatFormat::ChatML);
    EXPECT_EQ(file.chat->default_system, "You are a helpful assistant.");
    write_text(tmp_ / "odd.jinja", "{{ messages }}");
    EXPECT_THROW(resolve_chat_template((tmp_ / "odd.jinja").string(), *model), Error);
    EXPECT_THROW(resolve_chat_template("no-such-template", *model), Error);
  }
  fs::remove_all(tmp_ / "model");
  {
    nlohmann::json config = {{"chat_template", kLlama3Jinja},
                             {"bos_token", "<|begin_of_text|>"},
                             {"eos_token", {{"content", "<|eot_id|>"}}}};
    auto model = Model::load(model_with(config.dump()).string());
    const ResolvedChatTemplate own = resolve_chat_template("", *model);
    ASSERT_TRUE(own.chat);
    EXPECT_EQ(own.chat->format, ChatFormat::Llama3);
    EXPECT_EQ(own.chat->bos_token, "<|begin_of_text|>");
  }
  fs::remove_all(tmp_ / "model");
  {
    nlohmann::json config = {{"chat_template", "{{ messages }}"}};
    auto model = Model::load(model_with(config.dump()).string());
    const ResolvedChatTemplate odd = resolve_chat_template("", *model);
    EXPECT_FALSE(odd.chat);
    EXPECT_NE(odd.unavailable.find("not one podkv recognises"), std::string::npos) << odd.unavailable;
    EXPECT_TRUE(resolve_chat_template("chatml", *model).chat);
  }
}

}  // namespace
}  // namespace podkv
