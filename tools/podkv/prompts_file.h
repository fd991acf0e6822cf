// `podkv generate --prompts FILE.jsonl`: one request per line, validated as a
// whole before anything runs.
#pragma once

#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace podkv::cli {

// Each line: {"prompt": "..."} or {"ids": [...]}, with optional n_predict,
// temperature, top_k, top_p, min_p, seed, stop (string or list of strings)
// overriding `defaults`. Errors name the file and the line number. Prompts are
// tokenized (BOS added unless no_bos); max_new_tokens is cut to what fits `context`.
std::vector<GenerateRequest> read_prompts_file(const std::string& path, const Tokenizer* tokenizer,
                                               const ModelConfig& config, const GenerateOptions& defaults,
                                               int64_t context, bool no_bos);

}  // namespace podkv::cli
