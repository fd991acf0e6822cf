// `podkv generate --prompts FILE.jsonl`: every line is parsed and validated
// (with the reference model's tokenizer) or the file is refused naming the line.
#include "../tools/podkv/prompts_file.h"
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::unique_ptr<podkv::Tokenizer> tokenizer =
      podkv::load_tokenizer(std::string(PODKV_SOURCE_DIR) + "/models/podkv-ref");
  podkv::ModelConfig config;
  config.vocab_size = 1007;
  const std::string path = podkv::fuzz::write_file("prompts.jsonl", data, size);
  podkv::GenerateOptions defaults;
  try {
    const auto requests = podkv::cli::read_prompts_file(path, tokenizer.get(), config, defaults, 256, false);
    for (const auto& r : requests)
      if (r.prompt_ids.empty() || r.prompt_ids.size() > 256 || r.options.max_new_tokens < 0) __builtin_trap();
  } catch (const podkv::Error&) {
  }
  return 0;
}
