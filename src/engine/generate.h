// Text generation for one sequence: prefill the prompt, then sample one token
// at a time until the token budget, an EOS token or a stop string, through the
// step-wise generator (generator.h). Streams whole UTF-8 pieces to a callback;
// the library never prints.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/runner.h"

namespace podkv {

// `tokenizer` may be null (ids in and out only; stop strings then unused).
// `on_text` receives each newly complete piece of text (may be empty function).
// Throws KvCacheFull before anything runs when the prompt cannot fit.
GenerateResult generate(Runner& runner, int seq, const Tokenizer* tokenizer, const std::vector<int32_t>& prompt_ids,
                        const GenerateOptions& options, const std::function<void(const std::string&)>& on_text = {});

}  // namespace podkv
