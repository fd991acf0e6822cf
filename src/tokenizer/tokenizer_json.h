// Hugging Face tokenizer.json (tokenizers library format) -> BpeTokenizer.
#pragma once

#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace podkv::tok {

// Loads PATH (a tokenizer.json). BOS/EOS come from the post-processor and,
// when present next to it, tokenizer_config.json and generation_config.json.
// Throws Error("PATH: field: problem") on anything it cannot honour.
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path);

}  // namespace podkv::tok
