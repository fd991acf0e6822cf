// GGUF export of a Model (see gguf_export.h for what is written and why).
#include "convert/gguf_export.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <tuple>

#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "model/model.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/sentencepiece_proto.h"
#include "util/bounded_read.h"
#include "util/error.h"
#include "util/quant.h"

namespace podkv {

namespace {

namespace fs = std::filesystem;
using gguf::MetaValue;
using gguf::TensorType;
using json = nlohmann::json;

// ggml's token types (llama.cpp's LLAMA_TOKEN_TYPE_*).
constexpr int64_t kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5;

// What llama-quantize's recipe (llama.cpp's llama_tensor_get_type) looks at for a matrix: its role,
// and for attn_v and ffn_down, which the K mixes give more bits in some layers, its layer among the
// model's and whether the model is a 70B (80 layers, grouped-query attention).
enum class Role { Plain, Output, AttnV, AttnOutput, FfnDown };
struct Placement {
  Role role = Role::Plain;
  int layer = 0, layers = 1;
  int gqa = 1;  // query heads per KV head
  bool is_70b = false;
};

// llama.cpp's use_more_bits: the first and last eighth of the layers, and every third between.
bool use_more_bits(int layer, int layers) {
  return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

// llama-quantize's fallbacks for rows that are not whole blocks of the type (rows not a multiple of
// 256): Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL, Q2_K and Q3_K -> Q4_0 (older
// llama.cpp writes IQ4_NL for those two); then F16 (rows not a multiple of 32).
DType fit_rows(DType type, int64_t cols) {
  if (dtype_block_size(type) == quant::kSuperBlock && cols % quant::kSuperBlock != 0) {
    switch (type) {
      case DType::Q4_K: type = DType::Q5_0; break;
      case DType::Q5_K: type = DType::Q5_1; break;
      case DType::Q6_K: type = DType::Q8_0; break;
      case DType::IQ4_XS: type = DType::IQ4_NL; break;
      default: type = DType::Q4_0; break;  // Q2_K, Q3_K
    }
  }
  if (type != DType::F16 && cols % quant::kBlock != 0) type = DType::F16;
  return type;
}

// The type the matrices of an export type mostly take (general.file_type's).
DType main_dtype(GgufExportType t, DType stored) {
  switch (t) {
    case GgufExportType::Keep: return stored;
    case GgufExportType::F32: return DType::F32;
    case GgufExportType::F16: return DType::F16;
    case GgufExportType::BF16: return DType::BF16;
    case GgufExportType::Q8_0: return DType::Q8_0;
    case GgufExportType::Q4_0: return DType::Q4_0;
    case GgufExportType::Q4_1: return DType::Q4_1;
    case GgufExportType::Q5_0: return DType::Q5_0;
    case GgufExportType::Q5_1: return DType::Q5_1;
    case GgufExportType::Q2_K: return DType::Q2_K;
    case GgufExportType::Q3_K_S: case GgufExportType::Q3_K_M: case GgufExportType::Q3_K_L: return DType::Q3_K;
    case GgufExportType::Q4_K_S: case GgufExportType::Q4_K_M: return DType::Q4_K;
    case GgufExportType::Q5_K_S: case GgufExportType::Q5_K_M: return DType::Q5_K;
    case GgufExportType::Q6_K: return DType::Q6_K;
    case GgufExportType::IQ4_NL: return DType::IQ4_NL;
    case GgufExportType::IQ4_XS: return DType::IQ4_XS;
  }
  return stored;
}

// llama-quantize's choice for one matrix of a block-type export (llama.cpp's llama_tensor_get_type
// for the llama architecture, no importance matrix, no experts); `type` is the export's main type.
DType recipe_dtype(GgufExportType t, const Placement& at, DType type) {
  using E = GgufExportType;
  const int i = at.layer, n = at.layers;
  switch (at.role) {
    case Role::Output:  // or the token embedding tied to it
      return DType::Q6_K;
    case Role::AttnV:
      if (t == E::Q2_K) type = at.gqa >= 4 ? DType::Q4_K : DType::Q3_K;
      else if (t == E::Q3_K_M) type = i < 2 ? DType::Q5_K : DType::Q4_K;
      else if (t == E::Q3_K_L) type = DType::Q5_K;
      else if ((t == E::IQ4_NL || t == E::IQ4_XS) && at.gqa >= 4) type = DType::Q5_K;
      else if ((t == E::Q4_K_M || t == E::Q5_K_M) && use_more_bits(i, n)) type = DType::Q6_K;
      else if (t == E::Q4_K_S && i < 4) type = DType::Q5_K;
      if (at.is_70b && (type == DType::Q3_K || type == DType::Q4_K)) type = DType::Q5_K;
      return type;
    case Role::FfnDown:
      if (t == E::Q2_K) return DType::Q3_K;
      if (t == E::Q3_K_M) return i < n / 16 ? DType::Q5_K : DType::Q4_K;
      if (t == E::Q3_K_L) return DType::Q5_K;
      if ((t == E::Q4_K_M || t == E::Q5_K_M) && use_more_bits(i, n)) return DType::Q6_K;
      if ((t == E::Q4_K_S || t == E::IQ4_NL || t == E::IQ4_XS) && i < n / 8) return DType::Q5_K;
      return type;
    case Role::AttnOutput:
      if (t == E::Q2_K) return DType::Q3_K;
      if (t == E::Q3_K_M) return DType::Q4_K;
      if (t == E::Q3_K_L) return DType::Q5_K;
      return type;
    default:
      return type;
  }
}

// A matrix's type in the written file: the float types and Q8_0 as named; the other block types by
// llama-quantize's recipe (recipe_dtype); rows that are not whole blocks as fit_rows.
DType target_dtype(GgufExportType t, DType stored, int64_t cols, const Placement& at = {}) {
  const DType type = main_dtype(t, stored);
  switch (t) {
    case GgufExportType::Keep: case GgufExportType::F32: case GgufExportType::F16: case GgufExportType::BF16:
      return type;
    case GgufExportType::Q8_0:
      return fit_rows(type, cols);
    default:
      return fit_rows(recipe_dtype(t, at, type), cols);
  }
}

// Source row of output row r of a Q or K matrix [n_head * d, cols] under
// llama.cpp's permute: w.reshape(n_head, 2, d/2, cols).swapaxes(1, 2), i.e.
// output row h*d + 2i + j is input row h*d + j*(d/2) + i. Rotate-half RoPE on
// (i, i + d/2) thereby becomes pairwise RoPE on (2i, 2i + 1).
int64_t permuted_source_row(int64_t r, int64_t head_dim) {
  const int64_t h = r / head_dim, rem = r % head_dim;
  return h * head_dim + (rem % 2) * (head_dim / 2) + rem / 2;
}

// Converts one row of `cols` elements from `from` to `to` (row lengths are
// whole Q8_0 blocks whenever either side is Q8_0).
void convert_row(DType from, const uint8_t* src, DType to, uint8_t* dst, int64_t cols, std::vector<float>& tmp) {
  const size_t n = static_cast<size_t>(cols);
  if (from == to) {
    std::memcpy(dst, src, dtype_bytes(from, n));
    return;
  }
  tmp.resize(n);
  to_f32(from, src, tmp.data(), n);
  switch (to) {
    case DType::F32: std::memcpy(dst, tmp.data(), n * 4); return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) { const uint16_t h = f32_to_f16(tmp[i]); std::memcpy(dst + 2 * i, &h, 2); }
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) { const uint16_t h = f32_to_bf16(tmp[i]); std::memcpy(dst + 2 * i, &h, 2); }
      return;
    case DType::Q8_0: gguf::quantize_q8_0(tmp.data(), dst, n); return;
    case DType::Q4_0: quant::quantize_q4_0(tmp.data(), dst, n); return;
    case DType::Q4_1: quant::quantize_q4_1(tmp.data(), dst, n); return;
    case DType::Q5_0: quant::quantize_q5_0(tmp.data(), dst, n); return;
    case DType::Q5_1: quant::quantize_q5_1(tmp.data(), dst, n); return;
    case DType::Q2_K: quant::quantize_q2_k(tmp.data(), dst, n); return;
    case DType::Q3_K: quant::quantize_q3_k(tmp.data(), dst, n); return;
    case DType::Q4_K: quant::quantize_q4_k(tmp.data(), dst, n); return;
    case DType::Q5_K: quant::quantize_q5_k(tmp.data(), dst, n); return;
    case DType::Q6_K: quant::quantize_q6_k(tmp.data(), dst, n); return;
    case DType::IQ4_NL: quant::quantize_iq4_nl(tmp.data(), dst, n); return;
    case DType::IQ4_XS: quant::quantize_iq4_xs(tmp.data(), dst, n); return;
    default: throw Error(std::string("gguf export: cannot write dtype ") + dtype_name(to));
  }
}

class Exporter {
 public:
  explicit Exporter(const GgufExportOptions& opts) : opts_(opts) {}

  // A weight matrix [rows, cols] (PyTorch order; ggml shape {cols, rows}).
  // permute_head_dim > 0 applies the Q/K row permutation with that head size.
  void matrix(const std::string& name, const WeightMatrix& m, int64_t permute_head_dim = 0, const Placement& at = {}) {
    const DType to = target_dtype(opts_.type, m.dtype, m.cols, at);
    quantized_ = quantized_ || dtype_is_quantized(to);
    const size_t in_row = m.row_bytes(), out_row = dtype_bytes(to, static_cast<size_t>(m.cols));
    std::vector<uint8_t> bytes(out_row * static_cast<size_t>(m.rows));
    const auto* src = static_cast<const uint8_t*>(m.data);
    auto row = [&](int64_t r, std::vector<float>& tmp) {
      const int64_t s = permute_head_dim > 0 ? permuted_source_row(r, permute_head_dim) : r;
      convert_row(m.dtype, src + static_cast<size_t>(s) * in_row, to, bytes.data() + static_cast<size_t>(r) * out_row,
                  m.cols, tmp);
    };
    // Rows are independent (the K-quants' searches make a Q4_K_M export of a 100M model 5 s on one
    // core): row 0 alone first, so that anything convert_row throws is thrown outside the parallel
    // region, then the rest on every core. Each row's bytes do not depend on the thread.
    std::vector<float> first;
    if (m.rows > 0) row(0, first);
#pragma omp parallel
    {
      std::vector<float> tmp;
#pragma omp for schedule(dynamic, 16)
      for (int64_t r = 1; r < m.rows; ++r) row(r, tmp);
    }
    writer_.add_tensor(name, gguf::from_dtype(to), {m.cols, m.rows}, bytes.data(), bytes.size());
    ++tensors_;
  }

  void vector(const std::string& name, const std::vector<float>& v) {
    writer_.add_tensor(name, TensorType::F32, {static_cast<int64_t>(v.size())}, v.data(), v.size() * 4);
    ++tensors_;
  }

  gguf::Writer& writer() { return writer_; }
  size_t tensors() const { return tensors_; }
  bool quantized() const { return quantized_; }  // a block type was written

 private:
  const GgufExportOptions& opts_;
  gguf::Writer writer_;
  size_t tensors_ = 0;
  bool quantized_ = false;
};

// llama.cpp's general.file_type (LLAMA_FTYPE_*) of an export.
uint32_t file_type(GgufExportType export_type, DType stored) {
  switch (export_type) {
    case GgufExportType::Q2_K: return 10;  // LLAMA_FTYPE_MOSTLY_Q2_K
    case GgufExportType::Q3_K_S: return 11;
    case GgufExportType::Q3_K_M: return 12;
    case GgufExportType::Q3_K_L: return 13;
    case GgufExportType::Q4_K_S: return 14;
    case GgufExportType::Q4_K_M: return 15;
    case GgufExportType::Q5_K_S: return 16;
    case GgufExportType::Q5_K_M: return 17;
    default: break;
  }
  switch (main_dtype(export_type, stored)) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q8_0: return 7;
    case DType::Q5_0: return 8;
    case DType::Q5_1: return 9;
    case DType::Q6_K: return 18;  // LLAMA_FTYPE_MOSTLY_Q6_K
    case DType::IQ4_NL: return 25;  // LLAMA_FTYPE_MOSTLY_IQ4_NL
    case DType::IQ4_XS: return 30;  // LLAMA_FTYPE_MOSTLY_IQ4_XS
    case DType::BF16: return 32;
    default: return 0;
  }
}

// The exact regex of a tokenizer.json pre-tokenizer that llama.cpp can name (gpt-2, llama-bpe, qwen2),
// or "" when it is something else. Accepted: ByteLevel(use_regex) alone, or
// Sequence[Split(Regex, Isolated, !invert), ByteLevel(!use_regex)].
std::string pre_tokenizer_name(const json& pre) {
  if (!pre.is_object()) return "";
  auto is_bytelevel = [](const json& p, bool use_regex) {
    return p.value("type", "") == "ByteLevel" && p.value("use_regex", true) == use_regex;
  };
  std::string pattern;
  if (is_bytelevel(pre, true)) {
    pattern = tok::kGpt2Pattern;
  } else if (pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].size() == 2) {
    const json& split = pre["pretokenizers"][0];
    if (split.value("type", "") != "Split" || split.value("behavior", "") != "Isolated" || split.value("invert", false) ||
        !split.contains("pattern") || !split["pattern"].contains("Regex") || !is_bytelevel(pre["pretokenizers"][1], false))
      return "";
    pattern = split["pattern"]["Regex"].get<std::string>();
  } else {
    return "";
  }
  if (pattern == tok::kGpt2Pattern) return "gpt-2";
  if (pattern == tok::kLlama3Pattern) return "llama-bpe";
  if (pattern == tok::kQwen2JsonPattern) return "qwen2";
  return "";
}

// Adds tokenizer.ggml.* from a byte-level BPE tokenizer.json; returns "" on
// success or why the tokenizer cannot be expressed (then nothing is added).
std::string add_tokenizer_json(gguf::Writer& w, const fs::path& path, const ModelConfig& c) {
  if (!fs::exists(path)) return path.string() + ": cannot open";
  const std::string text = read_file_bounded(path.string(), kMaxTextBytes);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path.string() + ": " + e.what());
  }
  const json& model = j.value("model", json::object());
  if (model.value("type", "") != "BPE") return "model.type is not BPE";
  // NFC (Qwen's) is the identity on the NFC text nearly all input is, for podkv's tokenizer.json
  // reader as for llama.cpp, which drops it; any other normalizer changes the ids.
  if (j.contains("normalizer") && !j["normalizer"].is_null() && j["normalizer"].value("type", "") != "NFC")
    return "it has a normalizer other than NFC";
  const std::string pre = pre_tokenizer_name(j.value("pre_tokenizer", json()));
  if (pre.empty()) return "its pre_tokenizer is not GPT-2's, Llama 3's or Qwen2's byte-level split";
  if (model.value("ignore_merges", false) != (pre == "llama-bpe")) return "its ignore_merges differs from llama.cpp's for " + pre;
  if (model.value("byte_fallback", false)) return "it uses byte_fallback";
  if (j.contains("decoder") && !j["decoder"].is_null() && j["decoder"].value("type", "") != "ByteLevel")
    return "its decoder is not ByteLevel";

  // Tokens by id: vocabulary, then added tokens; holes and the model's padded
  // rows become unused "[PAD<id>]" entries, as convert_hf_to_gguf.py writes them.
  std::map<int64_t, std::pair<std::string, int64_t>> by_id;
  for (const auto& [text, id] : model.at("vocab").items()) by_id[id.get<int64_t>()] = {text, kNormal};
  for (const json& a : j.value("added_tokens", json::array()))
    by_id[a.at("id").get<int64_t>()] = {a.at("content").get<std::string>(), a.value("special", false) ? kControl : kUserDefined};
  if (by_id.empty() || by_id.begin()->first < 0) return "its vocabulary is empty or has negative ids";
  if (by_id.rbegin()->first >= c.vocab_size) return "it has more tokens than the model's vocab_size";
  std::vector<std::string> tokens(static_cast<size_t>(c.vocab_size));
  std::vector<int64_t> types(tokens.size(), kUnused);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = "[PAD" + std::to_string(i) + "]";
  for (const auto& [id, t] : by_id) std::tie(tokens[id], types[id]) = t;

  std::vector<std::string> merges;
  for (const json& m : model.value("merges", json::array()))
    merges.push_back(m.is_string() ? m.get<std::string>() : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());

  // Post-processor: nothing, ByteLevel, or a template "[BOS] $A" / "$A"
  // (possibly inside a Sequence, as Llama 3 has it). Anything else is skipped.
  int64_t bos = c.bos_token_id;
  bool add_bos = false;
  std::vector<json> procs;
  const json post = j.value("post_processor", json());
  if (!post.is_null()) {
    if (post.value("type", "") == "Sequence") procs.assign(post.at("processors").begin(), post.at("processors").end());
    else procs.push_back(post);
  }
  for (const json& p : procs) {
    const std::string type = p.value("type", "");
    if (type == "ByteLevel") continue;
    if (type != "TemplateProcessing") return "its post_processor " + type + " is not supported";
    const json& single = p.at("single");
    const bool bos_first = single.size() == 2 && single[0].contains("SpecialToken") && single[1].contains("Sequence");
    if (!bos_first && !(single.size() == 1 && single[0].contains("Sequence")))
      return "its post_processor template is not \"[BOS] $A\" or \"$A\"";
    if (bos_first) {
      // The template names the token; its special_tokens map (or else the vocabulary) gives the id.
      const std::string text = single[0]["SpecialToken"].at("id").get<std::string>();
      const json specials = p.value("special_tokens", json::object());
      if (specials.contains(text) && specials[text].contains("ids") && specials[text]["ids"].size() == 1) {
        bos = specials[text]["ids"][0].get<int64_t>();
        if (bos < 0 || bos >= c.vocab_size) return "its template token " + text + " has an id outside the vocabulary";
      } else {
        auto it = std::find(tokens.begin(), tokens.end(), text);
        if (it == tokens.end()) return "its template token " + text + " is not in the vocabulary";
        bos = it - tokens.begin();
      }
      add_bos = true;
    }
  }

  w.set("tokenizer.ggml.model", MetaValue::make_string("gpt2"));
  w.set("tokenizer.ggml.pre", MetaValue::make_string(pre));
  w.set("tokenizer.ggml.tokens", MetaValue::make_strings(std::move(tokens)));
  w.set("tokenizer.ggml.token_type", MetaValue::make_int32s(std::move(types)));
  w.set("tokenizer.ggml.merges", MetaValue::make_strings(std::move(merges)));
  if (bos >= 0) w.set("tokenizer.ggml.bos_token_id", MetaValue::make_uint32(static_cast<uint32_t>(bos)));
  if (!c.eos_token_ids.empty())
    w.set("tokenizer.ggml.eos_token_id", MetaValue::make_uint32(static_cast<uint32_t>(c.eos_token_ids.front())));
  w.set("tokenizer.ggml.add_bos_token", MetaValue::make_bool(add_bos));
  return "";
}

// Adds tokenizer.ggml.* for a SentencePiece BPE tokenizer.model as llama.cpp's
// "llama" vocabulary (convert_hf_to_gguf.py's _create_vocab_sentencepiece):
// pieces, scores, piece types (SentencePiece numbers them as GGUF does), the
// special ids, and add_bos/add_eos from tokenizer_config.json (default: BOS
// only). Rows of the model beyond the pieces become unused "[PAD<id>]".
// Returns "" or why it cannot be embedded.
std::string add_sentencepiece(gguf::Writer& w, const fs::path& path, const json& tokenizer_config, const ModelConfig& c) {
  tok::SpmConfig v;
  try {
    v = tok::read_sentencepiece_vocab(path.string());
  } catch (const Error& e) {
    return e.what();  // e.g. a unigram model: the weights still convert
  }
  if (static_cast<int64_t>(v.tokens.size()) > c.vocab_size) return "it has more pieces than the model's vocab_size";
  std::vector<double> scores(v.scores.begin(), v.scores.end());
  std::vector<int64_t> types(v.types.begin(), v.types.end());
  for (auto i = static_cast<int64_t>(v.tokens.size()); i < c.vocab_size; ++i) {
    v.tokens.push_back("[PAD" + std::to_string(i) + "]");
    scores.push_back(-1000.0);
    types.push_back(kUnused);
  }
  w.set("tokenizer.ggml.model", MetaValue::make_string("llama"));
  w.set("tokenizer.ggml.pre", MetaValue::make_string("default"));
  w.set("tokenizer.ggml.tokens", MetaValue::make_strings(std::move(v.tokens)));
  w.set("tokenizer.ggml.scores", MetaValue::make_float32s(std::move(scores)));
  w.set("tokenizer.ggml.token_type", MetaValue::make_int32s(std::move(types)));
  if (v.bos_id >= 0) w.set("tokenizer.ggml.bos_token_id", MetaValue::make_uint32(static_cast<uint32_t>(v.bos_id)));
  if (v.eos_id >= 0) w.set("tokenizer.ggml.eos_token_id", MetaValue::make_uint32(static_cast<uint32_t>(v.eos_id)));
  if (v.unk_id >= 0) w.set("tokenizer.ggml.unknown_token_id", MetaValue::make_uint32(static_cast<uint32_t>(v.unk_id)));
  w.set("tokenizer.ggml.add_bos_token", MetaValue::make_bool(tokenizer_config.value("add_bos_token", true)));
  w.set("tokenizer.ggml.add_eos_token", MetaValue::make_bool(tokenizer_config.value("add_eos_token", false)));
  w.set("tokenizer.ggml.add_space_prefix", MetaValue::make_bool(v.add_space_prefix));
  return "";
}

// tokenizer_config.json of a model directory ({} when absent).
json read_tokenizer_config(const fs::path& dir) {
  const fs::path path = dir / "tokenizer_config.json";
  if (!fs::exists(path)) return json::object();
  try {
    json j = json::parse(read_file_bounded(path.string(), kMaxSmallJsonBytes));
    return j.is_object() ? j : json::object();
  } catch (const json::exception& e) {
    throw Error(path.string() + ": " + e.what());
  }
}

// The chat template of a model directory: chat_template.jinja, else
// tokenizer_config.json's chat_template (a string, or a list of {name,
// template} whose "default" is taken, as llama.cpp does); "" when none.
std::string chat_template(const fs::path& dir, const json& tokenizer_config) {
  if (const fs::path jinja = dir / "chat_template.jinja"; fs::exists(jinja))
    return read_file_bounded(jinja.string(), kMaxSmallJsonBytes);
  const json t = tokenizer_config.value("chat_template", json());
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array())
    for (const json& e : t)
      if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
        return e["template"].get<std::string>();
  return "";
}

}  // namespace

GgufExportType parse_gguf_export_type(const std::string& text, const std::string& option) {
  if (text == "keep") return GgufExportType::Keep;
  if (text == "f32") return GgufExportType::F32;
  if (text == "f16") return GgufExportType::F16;
  if (text == "bf16") return GgufExportType::BF16;
  if (text == "q8_0") return GgufExportType::Q8_0;
  if (text == "q4_0") return GgufExportType::Q4_0;
  if (text == "q4_1") return GgufExportType::Q4_1;
  if (text == "q5_0") return GgufExportType::Q5_0;
  if (text == "q5_1") return GgufExportType::Q5_1;
  if (text == "q2_k") return GgufExportType::Q2_K;
  if (text == "q3_k" || text == "q3_k_s") return GgufExportType::Q3_K_S;
  if (text == "q3_k_m") return GgufExportType::Q3_K_M;
  if (text == "q3_k_l") return GgufExportType::Q3_K_L;
  if (text == "q4_k" || text == "q4_k_s") return GgufExportType::Q4_K_S;
  if (text == "q4_k_m") return GgufExportType::Q4_K_M;
  if (text == "q5_k" || text == "q5_k_s") return GgufExportType::Q5_K_S;
  if (text == "q5_k_m") return GgufExportType::Q5_K_M;
  if (text == "q6_k") return GgufExportType::Q6_K;
  if (text == "iq4_nl") return GgufExportType::IQ4_NL;
  if (text == "iq4_xs") return GgufExportType::IQ4_XS;
  throw Error(option + ": '" + text +
              "' is not one of keep, f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s (q3_k), q3_k_m, q3_k_l, "
              "q4_k_s (q4_k), q4_k_m, q5_k_s (q5_k), q5_k_m, q6_k, iq4_nl, iq4_xs");
}

GgufExportResult export_gguf(const Model& model, const std::string& out_path, const GgufExportOptions& opts) {
  const ModelConfig& c = model.config();
  const std::string& src = model.path();
  // llama.cpp's architecture for the model: qwen3 for per-head q/k norms, qwen2 for q/k/v biases
  // (both rotate halves, as Hugging Face does), llama otherwise (Q/K rows permuted for pairwise RoPE).
  const bool biases = c.attention_bias || (!model.layers().empty() && !model.layers().front().bq.empty());
  if (c.qk_norm && biases)
    throw Error(src + ": cannot export to GGUF: " + c.architecture +
                " has both q/k/v biases and q/k norms, which no GGUF architecture llama.cpp reads expresses");
  const std::string arch = c.qk_norm ? "qwen3" : biases ? "qwen2" : "llama";
  if (arch != "llama" && c.rope_interleaved)
    throw Error(src + ": cannot export to GGUF " + arch + ": its Q/K rows are permuted for pairwise RoPE");
  auto key = [&](const char* suffix) { return arch + "." + suffix; };

  Exporter ex(opts);
  gguf::Writer& w = ex.writer();
  std::string name = opts.name;
  if (name.empty()) {
    const fs::path sp = fs::path(src).lexically_normal();
    const fs::path base = sp.filename().empty() ? sp.parent_path().filename() : sp.filename();
    name = fs::is_directory(src) ? base.string() : base.stem().string();
  }
  auto u32 = [](int64_t v) { return MetaValue::make_uint32(static_cast<uint32_t>(v)); };
  w.set("general.architecture", MetaValue::make_string(arch));
  w.set("general.name", MetaValue::make_string(name));
  w.set("general.file_type", MetaValue::make_uint32(file_type(opts.type, model.weight_dtype())));
  w.set(key("vocab_size"), u32(c.vocab_size));
  w.set(key("context_length"), u32(c.max_position_embeddings));
  w.set(key("embedding_length"), u32(c.hidden_size));
  w.set(key("block_count"), u32(c.num_layers));
  w.set(key("feed_forward_length"), u32(c.intermediate_size));
  w.set(key("attention.head_count"), u32(c.num_heads));
  w.set(key("attention.head_count_kv"), u32(c.num_kv_heads));
  w.set(key("attention.key_length"), u32(c.head_dim));
  w.set(key("attention.value_length"), u32(c.head_dim));
  w.set(key("rope.dimension_count"), u32(c.head_dim));
  w.set(key("rope.freq_base"), MetaValue::make_float32(static_cast<float>(c.rope_theta)));
  w.set(key("attention.layer_norm_rms_epsilon"), MetaValue::make_float32(static_cast<float>(c.rms_norm_eps)));
  if (c.rope_scaling.type == RopeScalingType::Linear) {
    w.set(key("rope.scaling.type"), MetaValue::make_string("linear"));
    w.set(key("rope.scaling.factor"), MetaValue::make_float32(static_cast<float>(c.rope_scaling.factor)));
  } else if (c.rope_scaling.type == RopeScalingType::Yarn) {
    // As llama.cpp's converter writes YaRN; llama.cpp takes beta_fast 32, beta_slow 1, the truncated
    // ramp and 0.1 ln(factor) + 1 as the attention factor, so other settings have no key to go to.
    const RopeScaling& y = c.rope_scaling;
    if (y.beta_fast != 32.0 || y.beta_slow != 1.0 || y.attention_factor != 0.0 || !y.truncate)
      throw Error(src + ": cannot export to GGUF: YaRN with beta_fast, beta_slow, attention_factor or truncate "
                  "other than the defaults has no GGUF key");
    w.set(key("rope.scaling.type"), MetaValue::make_string("yarn"));
    w.set(key("rope.scaling.factor"), MetaValue::make_float32(static_cast<float>(y.factor)));
    w.set(key("rope.scaling.original_context_length"), u32(y.original_max_position_embeddings));
  }

  GgufExportResult result;
  if (!opts.embed_tokenizer) {
    result.tokenizer_note = "tokenizer embedding was not asked for";
  } else if (const gguf::File* g = model.gguf_file(); g != nullptr) {
    // A GGUF source: its tokenizer metadata carries over as it is.
    for (const auto& [key, value] : g->metadata())
      if (key.starts_with("tokenizer.")) w.set(key, value);
    result.tokenizer_embedded = g->find("tokenizer.ggml.model") != nullptr;
    if (!result.tokenizer_embedded) result.tokenizer_note = src + " has no tokenizer";
  } else {
    // A directory: tokenizer.json first (as the tokenizer loader picks it), then tokenizer.model.
    const fs::path tj = fs::path(src) / "tokenizer.json", tm = fs::path(src) / "tokenizer.model";
    const json tokenizer_config = read_tokenizer_config(src);
    std::string why;
    if (fs::exists(tj)) {
      why = add_tokenizer_json(w, tj, c);
      if (!why.empty()) result.tokenizer_note = tj.string() + " was not embedded: " + why;
    } else if (fs::exists(tm)) {
      why = add_sentencepiece(w, tm, tokenizer_config, c);
      if (!why.empty()) result.tokenizer_note = tm.string() + " was not embedded: " + why;
    } else {
      why = result.tokenizer_note = src + " has no tokenizer.json or tokenizer.model";
    }
    result.tokenizer_embedded = why.empty();
    if (const std::string t = chat_template(src, tokenizer_config); !t.empty()) {
      w.set("tokenizer.chat_template", MetaValue::make_string(t));
      result.chat_template = true;
    }
  }
  if (!result.tokenizer_embedded) {
    // Still record the special ids: the GGUF reader takes BOS/EOS from these keys.
    if (c.bos_token_id >= 0) w.set("tokenizer.ggml.bos_token_id", MetaValue::make_uint32(static_cast<uint32_t>(c.bos_token_id)));
    if (!c.eos_token_ids.empty())
      w.set("tokenizer.ggml.eos_token_id", MetaValue::make_uint32(static_cast<uint32_t>(c.eos_token_ids.front())));
  }

  // llama3-style scaling (YaRN and linear have keys): the reader computes unscaled
  // frequencies and divides them by rope_freqs, so write unscaled / actual.
  if (c.rope_scaling.type != RopeScalingType::Linear && c.rope_scaling.type != RopeScalingType::Yarn) {
    ModelConfig plain = c;
    plain.rope_scaling = RopeScaling{};
    const std::vector<float> base = rope_inverse_frequencies(plain);
    const std::vector<float>& actual = model.rope_inv_freq();
    if (base != actual) {
      std::vector<float> factors(base.size());
      for (size_t i = 0; i < base.size(); ++i)
        factors[i] = static_cast<float>(static_cast<double>(base[i]) / static_cast<double>(actual[i]));
      ex.vector("rope_freqs.weight", factors);
    }
  }

  // HF checkpoints rotate halves: llama needs the permutation, which a llama GGUF source already has.
  const int64_t permute = arch == "llama" && !c.rope_interleaved ? c.head_dim : 0;
  // A token embedding that is also the output matrix is quantized as the output (llama-quantize's rule).
  const bool tied = model.lm_head().data == model.embedding().data;
  const bool is_70b = c.num_layers == 80 && c.num_heads != c.num_kv_heads;  // llama.cpp's LLM_TYPE_70B
  ex.matrix("token_embd.weight", model.embedding(), 0, {tied ? Role::Output : Role::Plain});
  ex.vector("output_norm.weight", model.final_norm());
  if (!tied) ex.matrix("output.weight", model.lm_head(), 0, {Role::Output});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const LayerWeights& lw = model.layers()[l];
    ex.vector(p + "attn_norm.weight", lw.attn_norm);
    ex.matrix(p + "attn_q.weight", lw.wq, permute);
    ex.matrix(p + "attn_k.weight", lw.wk, permute);
    ex.matrix(p + "attn_v.weight", lw.wv, 0, {Role::AttnV, l, c.num_layers, c.num_heads / c.num_kv_heads, is_70b});
    if (biases) {
      ex.vector(p + "attn_q.bias", lw.bq);
      ex.vector(p + "attn_k.bias", lw.bk);
      ex.vector(p + "attn_v.bias", lw.bv);
    }
    if (c.qk_norm) {
      ex.vector(p + "attn_q_norm.weight", lw.q_norm);
      ex.vector(p + "attn_k_norm.weight", lw.k_norm);
    }
    ex.matrix(p + "attn_output.weight", lw.wo, 0, {Role::AttnOutput, l, c.num_layers});
    ex.vector(p + "ffn_norm.weight", lw.mlp_norm);
    ex.matrix(p + "ffn_gate.weight", lw.w_gate);
    ex.matrix(p + "ffn_up.weight", lw.w_up);
    ex.matrix(p + "ffn_down.weight", lw.w_down, 0, {Role::FfnDown, l, c.num_layers});
  }
  if (ex.quantized()) w.set("general.quantization_version", MetaValue::make_uint32(2));  // GGML_QNT_VERSION
  w.write(out_path);
  result.tensor_count = ex.tensors();
  return result;
}

}  // namespace podkv
