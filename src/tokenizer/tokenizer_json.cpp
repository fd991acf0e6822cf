#include "tokenizer/tokenizer_json.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tokenizer/bpe.h"
#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv::tok {

namespace {

using nlohmann::json;

struct Ctx {
  std::string path;
  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw Error(path + ": " + where + ": " + what);
  }
  const json& field(const json& j, const char* key, const std::string& where) const {
    if (!j.is_object() || !j.contains(key)) fail(where, std::string("missing field \"") + key + "\"");
    return j.at(key);
  }
  std::string str(const json& j, const char* key, const std::string& where) const {
    const json& v = field(j, key, where);
    if (!v.is_string()) fail(where + "." + key, "expected a string");
    return v.get<std::string>();
  }
  bool flag(const json& j, const char* key, bool fallback, const std::string& where) const {
    if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return fallback;
    if (!j.at(key).is_boolean()) fail(where + "." + key, "expected true or false");
    return j.at(key).get<bool>();
  }
  int64_t integer(const json& j, const std::string& where) const {
    if (!j.is_number_integer()) fail(where, "expected an integer");
    return j.get<int64_t>();
  }
  // A Split / Replace pattern: {"String": literal} or {"Regex": pattern}.
  std::string pattern(const json& j, const std::string& where, bool* is_regex) const {
    if (j.is_object() && j.contains("Regex") && j.at("Regex").is_string()) {
      *is_regex = true;
      return j.at("Regex").get<std::string>();
    }
    if (j.is_object() && j.contains("String") && j.at("String").is_string()) {
      *is_regex = false;
      return j.at("String").get<std::string>();
    }
    fail(where, "expected {\"String\": ...} or {\"Regex\": ...}");
  }
};

// Token ids index arrays of every id up to the largest: a file's ids must stay within its entries
// (vocab and added tokens) plus kIdSlack unused ones, so that a wild id (the fuzzer's 99999992) is an
// error, not gigabytes of empty tokens. Real files number their tokens densely.
constexpr int64_t kIdSlack = int64_t{1} << 20;
int64_t id_limit(size_t entries) { return static_cast<int64_t>(entries) + kIdSlack; }
std::string id_range_error(int64_t id, int64_t limit) {
  return "id " + std::to_string(id) + " is out of range (0 to " + std::to_string(limit - 1) +
         ": the file's token count plus 2^20)";
}

std::string type_of(const Ctx& c, const json& j, const std::string& where) {
  return c.str(j, "type", where);
}

void parse_model(const Ctx& c, const json& m, BpeConfig& cfg) {
  const std::string w = "model";
  if (!m.is_object()) c.fail(w, "expected an object");
  const std::string type = m.contains("type") ? type_of(c, m, w) : "BPE";
  if (type != "BPE") c.fail(w + ".type", "\"" + type + "\" is not supported (only BPE)");
  if (m.contains("dropout") && !m.at("dropout").is_null()) {
    const json& dropout = m.at("dropout");
    if (!dropout.is_number()) c.fail(w + ".dropout", "expected a number or null");
    if (dropout.get<double>() != 0.0) c.fail(w + ".dropout", "BPE dropout is not supported");
  }
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(k) && m.at(k).is_string() && !m.at(k).get<std::string>().empty())
      c.fail(w + "." + k, "is not supported");
  const json& vocab = c.field(m, "vocab", w);
  if (!vocab.is_object()) c.fail(w + ".vocab", "expected an object of token: id");
  BpeModel& model = cfg.model;
  const int64_t limit = id_limit(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int64_t id = c.integer(it.value(), w + ".vocab[\"" + it.key() + "\"]");
    if (id < 0 || id >= limit) c.fail(w + ".vocab[\"" + it.key() + "\"]", id_range_error(id, limit));
    if (static_cast<size_t>(id) >= model.id_to_token.size()) model.id_to_token.resize(id + 1);
    model.id_to_token[id] = it.key();
    model.token_to_id[it.key()] = static_cast<int32_t>(id);
  }
  const json& merges = c.field(m, "merges", w);
  if (!merges.is_array()) c.fail(w + ".merges", "expected an array");
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& e = merges[i];
    const std::string wi = w + ".merges[" + std::to_string(i) + "]";
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        c.fail(wi, "expected \"a b\" with exactly one space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      c.fail(wi, "expected a string or a pair");
    }
    if (!model.add_merge(a, b, static_cast<int32_t>(i)))
      c.fail(wi, "\"" + a + "\" + \"" + b + "\" uses a token missing from model.vocab");
  }
  model.ignore_merges = c.flag(m, "ignore_merges", false, w);
  model.byte_fallback = c.flag(m, "byte_fallback", false, w);
  model.fuse_unk = c.flag(m, "fuse_unk", false, w);
  if (m.contains("unk_token") && m.at("unk_token").is_string()) {
    const std::string unk = m.at("unk_token").get<std::string>();
    model.unk_id = model.find(unk);
    if (model.unk_id < 0) c.fail(w + ".unk_token", "\"" + unk + "\" is not in model.vocab");
  }
}

void parse_normalizer(const Ctx& c, const json& n, const std::string& w, std::vector<NormalizeStep>& out) {
  if (n.is_null()) return;
  const std::string type = type_of(c, n, w);
  NormalizeStep s;
  if (type == "Sequence") {
    const json& list = c.field(n, "normalizers", w);
    if (!list.is_array()) c.fail(w + ".normalizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      parse_normalizer(c, list[i], w + ".normalizers[" + std::to_string(i) + "]", out);
    return;
  } else if (type == "Replace") {
    bool regex = false;
    s.kind = NormalizeStep::Kind::Replace;
    s.pattern = c.pattern(c.field(n, "pattern", w), w + ".pattern", &regex);
    if (regex) c.fail(w + ".pattern", "Regex patterns in Replace are not supported");
    s.content = c.str(n, "content", w);
  } else if (type == "Prepend") {
    s.kind = NormalizeStep::Kind::Prepend;
    s.content = c.str(n, "prepend", w);
  } else if (type == "Strip") {
    s.kind = NormalizeStep::Kind::Strip;
    s.left = c.flag(n, "strip_left", true, w);
    s.right = c.flag(n, "strip_right", true, w);
  } else if (type == "NFC") {
    s.kind = NormalizeStep::Kind::Nfc;
  } else {
    c.fail(w + ".type", "normalizer \"" + type + "\" is not supported");
  }
  out.push_back(std::move(s));
}

SplitBehavior parse_behavior(const Ctx& c, const json& j, const std::string& w) {
  if (!j.is_string()) c.fail(w, "expected a string");
  const std::string b = j.get<std::string>();
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  c.fail(w, "unknown behavior \"" + b + "\"");
}

PreTokenizeStep split_step(const std::string& pattern, SplitBehavior b, bool invert, const std::string& where) {
  PreTokenizeStep s;
  s.kind = PreTokenizeStep::Kind::Split;
  s.regex = Regex::get(pattern, where);
  s.behavior = b;
  s.invert = invert;
  return s;
}

void parse_pre(const Ctx& c, const json& p, const std::string& w, std::vector<PreTokenizeStep>& out) {
  if (p.is_null()) return;
  const std::string type = type_of(c, p, w);
  const std::string where = c.path + ": " + w;
  if (type == "Sequence") {
    const json& list = c.field(p, "pretokenizers", w);
    if (!list.is_array()) c.fail(w + ".pretokenizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      parse_pre(c, list[i], w + ".pretokenizers[" + std::to_string(i) + "]", out);
  } else if (type == "Split") {
    bool regex = false;
    std::string pat = c.pattern(c.field(p, "pattern", w), w + ".pattern", &regex);
    if (!regex) pat = regex_escape(pat);
    out.push_back(split_step(pat, parse_behavior(c, c.field(p, "behavior", w), w + ".behavior"),
                             c.flag(p, "invert", false, w), where + ".pattern"));
  } else if (type == "ByteLevel") {
    PreTokenizeStep s;
    s.kind = PreTokenizeStep::Kind::ByteLevel;
    s.add_prefix_space = c.flag(p, "add_prefix_space", true, w);
    if (c.flag(p, "use_regex", true, w)) s.regex = Regex::get(kGpt2Pattern, where);
    out.push_back(std::move(s));
  } else if (type == "Metaspace") {
    PreTokenizeStep s;
    s.kind = PreTokenizeStep::Kind::Metaspace;
    s.replacement = p.contains("replacement") ? c.str(p, "replacement", w) : "\xE2\x96\x81";
    s.split = c.flag(p, "split", true, w);
    if (p.contains("prepend_scheme") && p.at("prepend_scheme").is_string()) {
      const std::string sch = p.at("prepend_scheme").get<std::string>();
      if (sch == "always") s.prepend = 1;
      else if (sch == "first") s.prepend = 2;
      else if (sch == "never") s.prepend = 0;
      else c.fail(w + ".prepend_scheme", "unknown scheme \"" + sch + "\"");
    } else {
      s.prepend = c.flag(p, "add_prefix_space", true, w) ? 1 : 0;  // files older than prepend_scheme
    }
    out.push_back(std::move(s));
  } else if (type == "Digits") {
    // Rust's char::is_numeric is the N categories, i.e. \p{N}.
    const bool single = c.flag(p, "individual_digits", false, w);
    out.push_back(split_step(single ? R"(\p{N})" : R"(\p{N}+)", SplitBehavior::Isolated, false, where));
  } else if (type == "Punctuation") {
    const SplitBehavior b =
        p.contains("behavior") ? parse_behavior(c, p.at("behavior"), w + ".behavior") : SplitBehavior::Isolated;
    out.push_back(split_step(R"([\p{P}!-/:-@\[-`{-~])", b, false, where));
  } else if (type == "Whitespace") {
    out.push_back(split_step(R"(\w+|[^\w\s]+)", SplitBehavior::Removed, true, where));
  } else if (type == "WhitespaceSplit") {
    out.push_back(split_step(R"(\s+)", SplitBehavior::Removed, false, where));
  } else {
    c.fail(w + ".type", "pre-tokenizer \"" + type + "\" is not supported");
  }
}

// The ids a TemplateProcessing special token ("SpecialToken": {"id": name}) stands for.
std::vector<int32_t> template_ids(const Ctx& c, const json& special_tokens, const std::string& name,
                                  const std::string& w) {
  if (!special_tokens.is_object() || !special_tokens.contains(name))
    c.fail(w, "special token \"" + name + "\" is not in special_tokens");
  const json& ids = c.field(special_tokens.at(name), "ids", w + ".special_tokens[\"" + name + "\"]");
  std::vector<int32_t> out;
  for (size_t i = 0; ids.is_array() && i < ids.size(); ++i)
    out.push_back(static_cast<int32_t>(c.integer(ids[i], w + ".special_tokens[\"" + name + "\"].ids")));
  return out;
}

void parse_post(const Ctx& c, const json& p, const std::string& w, BpeConfig& cfg) {
  if (p.is_null()) return;
  const std::string type = type_of(c, p, w);
  if (type == "Sequence") {
    const json& list = c.field(p, "processors", w);
    if (!list.is_array()) c.fail(w + ".processors", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) parse_post(c, list[i], w + ".processors[" + std::to_string(i) + "]", cfg);
  } else if (type == "ByteLevel") {
    // Only adjusts offsets; ids are unchanged.
  } else if (type == "TemplateProcessing") {
    const json& single = c.field(p, "single", w);
    if (!single.is_array()) c.fail(w + ".single", "expected an array");
    const json& specials = p.contains("special_tokens") ? p.at("special_tokens") : json::object();
    bool seen_text = false;
    cfg.bos_prefix.clear();
    cfg.eos_suffix.clear();
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string wi = w + ".single[" + std::to_string(i) + "]";
      if (single[i].contains("Sequence")) {
        seen_text = true;
      } else if (single[i].contains("SpecialToken")) {
        const auto ids = template_ids(c, specials, c.str(single[i].at("SpecialToken"), "id", wi), w);
        auto& dst = seen_text ? cfg.eos_suffix : cfg.bos_prefix;
        dst.insert(dst.end(), ids.begin(), ids.end());
      } else {
        c.fail(wi, "expected a Sequence or a SpecialToken");
      }
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto id_of = [&](const char* key) {
      const json& v = c.field(p, key, w);
      if (!v.is_array() || v.size() != 2) c.fail(w + "." + key, "expected [token, id]");
      return static_cast<int32_t>(c.integer(v[1], w + "." + key + "[1]"));
    };
    cfg.bos_prefix = {id_of("cls")};
    cfg.eos_suffix = {id_of("sep")};
  } else {
    c.fail(w + ".type", "post-processor \"" + type + "\" is not supported");
  }
}

void parse_decoder(const Ctx& c, const json& d, const std::string& w, DecoderSpec& spec, bool& fused) {
  if (d.is_null()) return;
  const std::string type = type_of(c, d, w);
  if (type == "Sequence") {
    const json& list = c.field(d, "decoders", w);
    if (!list.is_array()) c.fail(w + ".decoders", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      parse_decoder(c, list[i], w + ".decoders[" + std::to_string(i) + "]", spec, fused);
  } else if (type == "ByteLevel") {
    spec.byte_level = true;
  } else if (type == "Replace") {
    bool regex = false;
    const std::string pat = c.pattern(c.field(d, "pattern", w), w + ".pattern", &regex);
    if (regex) c.fail(w + ".pattern", "Regex patterns in Replace are not supported");
    spec.replacements.emplace_back(pat, c.str(d, "content", w));
  } else if (type == "ByteFallback") {
    spec.byte_fallback = true;
  } else if (type == "Fuse") {
    fused = true;
  } else if (type == "Strip") {
    const std::string content = c.str(d, "content", w);
    const int64_t stop = d.contains("stop") ? c.integer(d.at("stop"), w + ".stop") : 0;
    const int64_t start = d.contains("start") ? c.integer(d.at("start"), w + ".start") : 0;
    if (content != " " || stop != 0 || !fused)
      c.fail(w, "only Strip of leading spaces after Fuse is supported");
    spec.strip_leading = static_cast<int>(start);
  } else if (type == "Metaspace") {
    const std::string rep = d.contains("replacement") ? c.str(d, "replacement", w) : "\xE2\x96\x81";
    spec.replacements.emplace_back(rep, " ");
    bool prefix = c.flag(d, "add_prefix_space", true, w);
    if (d.contains("prepend_scheme") && d.at("prepend_scheme").is_string())
      prefix = d.at("prepend_scheme").get<std::string>() != "never";
    if (prefix) spec.metaspace_first = rep;
  } else {
    c.fail(w + ".type", "decoder \"" + type + "\" is not supported");
  }
}

json read_json(const std::string& path) {
  const std::string text = read_file_bounded(path, kMaxTextBytes);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

// tokenizer_config.json writes special tokens as a string or {"content": ...}.
std::string token_name(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
  return {};
}

void read_sidecar_configs(const std::string& path, BpeConfig& cfg) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(path).parent_path();
  auto id_of = [&](const std::string& name) -> int32_t {
    for (const auto& a : cfg.added)
      if (a.content == name) return a.id;
    return name.empty() ? -1 : cfg.model.find(name);
  };
  auto add_eos = [&](int32_t id) {
    if (id >= 0 && std::find(cfg.eos_ids.begin(), cfg.eos_ids.end(), id) == cfg.eos_ids.end()) cfg.eos_ids.push_back(id);
  };
  const fs::path tc = dir / "tokenizer_config.json";
  if (fs::exists(tc)) {
    const json j = read_json(tc.string());
    if (cfg.bos_id < 0 && j.contains("bos_token")) cfg.bos_id = id_of(token_name(j.at("bos_token")));
    if (j.contains("eos_token")) add_eos(id_of(token_name(j.at("eos_token"))));
  }
  const fs::path gc = dir / "generation_config.json";
  if (fs::exists(gc)) {
    const json j = read_json(gc.string());
    if (j.contains("eos_token_id")) {
      const json& e = j.at("eos_token_id");
      if (e.is_number_integer()) add_eos(e.get<int32_t>());
      for (size_t i = 0; e.is_array() && i < e.size(); ++i)
        if (e[i].is_number_integer()) add_eos(e[i].get<int32_t>());
    }
  }
  if (cfg.eos_ids.empty()) {
    // No configuration says: take the special tokens that conventionally end text.
    for (const char* n : {"</s>", "<|end_of_text|>", "<|eot_id|>", "<|endoftext|>", "<|im_end|>", "<eos>", "<|end|>"})
      for (const auto& a : cfg.added)
        if (a.special && a.content == n) add_eos(a.id);
  }
}

BpeConfig parse_tokenizer_json(const Ctx& c, const json& j) {
  if (!j.is_object()) c.fail("(top level)", "expected an object");
  BpeConfig cfg;
  parse_model(c, c.field(j, "model", "(top level)"), cfg);
  if (j.contains("added_tokens")) {
    const json& list = j.at("added_tokens");
    if (!list.is_array()) c.fail("added_tokens", "expected an array");
    const int64_t limit = id_limit(cfg.model.token_to_id.size() + list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string w = "added_tokens[" + std::to_string(i) + "]";
      AddedToken a;
      a.content = c.str(list[i], "content", w);
      const int64_t id = c.integer(c.field(list[i], "id", w), w + ".id");
      if (id < 0 || id >= limit) c.fail(w + ".id", id_range_error(id, limit));
      a.id = static_cast<int32_t>(id);
      a.lstrip = c.flag(list[i], "lstrip", false, w);
      a.rstrip = c.flag(list[i], "rstrip", false, w);
      a.single_word = c.flag(list[i], "single_word", false, w);
      a.special = c.flag(list[i], "special", false, w);
      cfg.added.push_back(std::move(a));
    }
  }
  if (j.contains("normalizer")) parse_normalizer(c, j.at("normalizer"), "normalizer", cfg.normalizer);
  if (j.contains("pre_tokenizer")) parse_pre(c, j.at("pre_tokenizer"), "pre_tokenizer", cfg.pre);
  if (j.contains("post_processor")) parse_post(c, j.at("post_processor"), "post_processor", cfg);
  bool fused = false;
  if (j.contains("decoder")) parse_decoder(c, j.at("decoder"), "decoder", cfg.decoder, fused);
  int32_t n = static_cast<int32_t>(cfg.model.id_to_token.size());
  for (const auto& a : cfg.added) n = std::max(n, a.id + 1);
  for (int32_t id : cfg.bos_prefix)
    if (id < 0 || id >= n) c.fail("post_processor", "special token id " + std::to_string(id) + " is outside the vocabulary");
  for (int32_t id : cfg.eos_suffix)
    if (id < 0 || id >= n) c.fail("post_processor", "special token id " + std::to_string(id) + " is outside the vocabulary");
  if (cfg.bos_prefix.size() == 1) cfg.bos_id = cfg.bos_prefix[0];
  return cfg;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path) {
  const Ctx c{path};
  const json j = read_json(path);
  BpeConfig cfg;
  // Every field is type-checked before it is read; this net turns a check that was missed (the fuzzer
  // found one in model.dropout) into the file's error rather than an escaped nlohmann exception.
  try {
    cfg = parse_tokenizer_json(c, j);
  } catch (const json::exception& e) {
    c.fail("(unexpected value type)", e.what());
  }
  read_sidecar_configs(path, cfg);
  return std::make_unique<BpeTokenizer>(std::move(cfg));
}

}  // namespace podkv::tok
