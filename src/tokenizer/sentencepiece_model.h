// SentencePiece tokenizer.model files, run by libsentencepiece itself.
#pragma once

#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace podkv::tok {

// Throws Error naming PATH when it cannot be loaded, or when podkv was built
// without libsentencepiece.
std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path);

}  // namespace podkv::tok
