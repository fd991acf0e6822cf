// Tokenizers from GGUF metadata (tokenizer.ggml.*), following llama.cpp.
#include <algorithm>

#include "io/gguf.h"
#include "tokenizer/bpe.h"
#include "tokenizer/spm.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace podkv {

namespace {

const gguf::MetaValue& require_array(const gguf::File& f, const std::string& key, gguf::ValueType elem) {
  const gguf::MetaValue* v = f.find(key);
  if (!v) throw Error(f.path() + ": metadata " + key + " is missing");
  if (v->type != gguf::ValueType::ARRAY || v->element_type != elem)
    throw Error(f.path() + ": metadata " + key + " has the wrong type");
  return *v;
}

int32_t token_id_or(const gguf::File& f, const std::string& key, int32_t fallback, size_t n_vocab) {
  const int64_t id = f.get_int_or(key, fallback);
  if (id == -1) return -1;
  if (id < 0 || static_cast<size_t>(id) >= n_vocab)
    throw Error(f.path() + ": metadata " + key + " = " + std::to_string(id) + " is outside the vocabulary (" +
                std::to_string(n_vocab) + " tokens)");
  return static_cast<int32_t>(id);
}

// End-of-generation ids: the EOS plus end-of-turn / end-of-message tokens, and
// control tokens with the names chat models end turns with (llama.cpp does
// the same, since many conversions record only the EOS).
std::vector<int32_t> eog_ids(const gguf::File& f, const std::vector<std::string>& tokens,
                             const std::vector<int64_t>& types, int32_t eos) {
  std::vector<int32_t> ids;
  auto add = [&](int32_t id) {
    if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  add(eos);
  add(token_id_or(f, "tokenizer.ggml.eot_token_id", -1, tokens.size()));
  add(token_id_or(f, "tokenizer.ggml.eom_token_id", -1, tokens.size()));
  static const char* const kNames[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                       "<|eom_id|>", "<EOT>", "<|end_of_text|>"};
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i < types.size() && types[i] != tok::kTokenControl) continue;
    for (const char* n : kNames)
      if (tokens[i] == n) add(static_cast<int32_t>(i));
  }
  return ids;
}

std::unique_ptr<Tokenizer> load_spm(const gguf::File& f, std::vector<std::string> tokens,
                                    std::vector<int64_t> types) {
  tok::SpmConfig c;
  const size_t n = tokens.size();
  if (const auto* s = f.find("tokenizer.ggml.scores")) {
    if (s->type != gguf::ValueType::ARRAY || s->floats.size() != n)
      throw Error(f.path() + ": metadata tokenizer.ggml.scores must be " + std::to_string(n) + " floats");
    c.scores.assign(s->floats.begin(), s->floats.end());
  }
  c.types.assign(types.begin(), types.end());
  c.add_space_prefix = f.get_bool_or("tokenizer.ggml.add_space_prefix", true);
  c.add_bos = f.get_bool_or("tokenizer.ggml.add_bos_token", true);
  c.add_eos = f.get_bool_or("tokenizer.ggml.add_eos_token", false);
  c.bos_id = token_id_or(f, "tokenizer.ggml.bos_token_id", n > 1 ? 1 : -1, n);
  c.eos_id = token_id_or(f, "tokenizer.ggml.eos_token_id", n > 2 ? 2 : -1, n);
  c.unk_id = token_id_or(f, "tokenizer.ggml.unknown_token_id", n > 0 ? 0 : -1, n);
  c.eos_ids = eog_ids(f, tokens, types, c.eos_id);
  c.tokens = std::move(tokens);
  auto t = std::make_unique<tok::SpmTokenizer>(std::move(c));
  return t;
}

std::unique_ptr<Tokenizer> load_gpt2(const gguf::File& f, const std::vector<std::string>& tokens,
                                     const std::vector<int64_t>& types) {
  const std::string pre = f.find("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "default";
  tok::BpeConfig c;
  std::vector<std::string> patterns;
  try {
    patterns = tok::gguf_pre_patterns(pre);
  } catch (const Error& e) {
    throw Error(f.path() + ": " + e.what());
  }
  for (const auto& p : patterns) {
    tok::PreTokenizeStep s;
    s.kind = tok::PreTokenizeStep::Kind::Split;
    s.regex = tok::Regex::get(p, f.path() + ": tokenizer.ggml.pre " + pre);
    s.behavior = tok::SplitBehavior::Isolated;
    c.pre.push_back(std::move(s));
  }
  tok::PreTokenizeStep bl;
  bl.kind = tok::PreTokenizeStep::Kind::ByteLevel;
  c.pre.push_back(std::move(bl));

  const bool llama3 = pre == "llama-bpe" || pre == "llama3";
  c.model.ignore_merges = llama3;
  c.model.id_to_token = tokens;
  for (size_t i = 0; i < tokens.size(); ++i) c.model.token_to_id.emplace(tokens[i], static_cast<int32_t>(i));
  const auto& merges = require_array(f, "tokenizer.ggml.merges", gguf::ValueType::STRING).strings;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& m = merges[i];
    // The separator is the first space after the first character: a merge's
    // left side can itself be a lone space in some vocabularies.
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos)
      throw Error(f.path() + ": metadata tokenizer.ggml.merges[" + std::to_string(i) + "]: expected \"a b\"");
    // A merge whose parts or result are not tokens can never apply; llama.cpp
    // keeps such entries too without effect, so they are skipped.
    c.model.add_merge(std::string_view(m).substr(0, sp), std::string_view(m).substr(sp + 1),
                      static_cast<int32_t>(i));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t ty = i < types.size() ? types[i] : int64_t{tok::kTokenNormal};
    if (ty == tok::kTokenControl || ty == tok::kTokenUserDefined)
      c.added.push_back({tokens[i], static_cast<int32_t>(i), false, false, false, ty == tok::kTokenControl});
  }
  c.decoder.byte_level = true;
  c.added_verbatim = true;
  const size_t n = tokens.size();
  c.bos_id = token_id_or(f, "tokenizer.ggml.bos_token_id", -1, n);
  const int32_t eos = token_id_or(f, "tokenizer.ggml.eos_token_id", -1, n);
  c.eos_ids = eog_ids(f, tokens, types, eos);
  const bool add_bos = f.get_bool_or("tokenizer.ggml.add_bos_token", llama3);
  const bool add_eos = f.get_bool_or("tokenizer.ggml.add_eos_token", false);
  if (add_bos && c.bos_id >= 0) c.bos_prefix = {c.bos_id};
  if (add_eos && eos >= 0) c.eos_suffix = {eos};
  return std::make_unique<tok::BpeTokenizer>(std::move(c));
}

}  // namespace

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const gguf::File& file) {
  const std::string model = file.get_string("tokenizer.ggml.model");
  std::vector<std::string> tokens = require_array(file, "tokenizer.ggml.tokens", gguf::ValueType::STRING).strings;
  if (tokens.empty()) throw Error(file.path() + ": metadata tokenizer.ggml.tokens is empty");
  std::vector<int64_t> types;
  if (const auto* t = file.find("tokenizer.ggml.token_type")) {
    if (t->type != gguf::ValueType::ARRAY || t->ints.size() != tokens.size())
      throw Error(file.path() + ": metadata tokenizer.ggml.token_type must be " + std::to_string(tokens.size()) +
                  " integers");
    types = t->ints;
  } else {
    types.assign(tokens.size(), tok::kTokenNormal);
  }
  if (model == "llama") return load_spm(file, std::move(tokens), std::move(types));
  if (model == "gpt2") return load_gpt2(file, tokens, types);
  throw Error(file.path() + ": metadata tokenizer.ggml.model \"" + model +
              "\" is not supported (supported: llama, gpt2)");
}

}  // namespace podkv
