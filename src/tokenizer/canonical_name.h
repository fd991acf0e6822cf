// Where a model directory looks for its tokenizer (see load_tokenizer).
#pragma once

#include <string>

namespace podkv {

// The name under which a model directory finds the tokenizer FILE:
// "tokenizer.json", "tokenizer.model" or "tokenizer.gguf" (a GGUF
// vocabulary), decided as load_tokenizer decides the format; throws Error
// when FILE cannot be opened.
std::string canonical_tokenizer_name(const std::string& file);

}  // namespace podkv
