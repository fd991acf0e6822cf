// llama2.c checkpoints and tokenizers (see llama2c.h for the layouts).
#include "convert/llama2c.h"

#include <cstring>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "tokenizer/bpe.h"
#include "tokenizer/sentencepiece_proto.h"
#include "util/bounded_read.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace podkv {

namespace {

namespace fs = std::filesystem;

constexpr uint32_t kMagic = 0x616b3432;  // "ak42"
constexpr size_t kLegacyHeaderBytes = 7 * 4, kVersion1HeaderBytes = 256;

struct Header {
  int version = 0;
  int32_t dim = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, seq_len = 0;
  bool shared_classifier = true;
  size_t bytes = 0;  // of the header
};

Header read_header(const MappedFile& f) {
  const std::string& path = f.path();
  Header h;
  const uint8_t* p = f.data();
  uint32_t magic = 0;
  if (f.size() >= 4) std::memcpy(&magic, p, 4);
  if (magic == kMagic) {
    check(f.size() >= kVersion1HeaderBytes, path + ": truncated llama2.c header (" + std::to_string(f.size()) +
                                                " bytes; version headers are 256)");
    int32_t version = 0;
    std::memcpy(&version, p + 4, 4);
    check(version == 1, path + ": llama2.c checkpoint version " + std::to_string(version) +
                            " is not supported (only version 1, float32)");
    h.version = 1;
    p += 8;
    h.bytes = kVersion1HeaderBytes;
  } else {
    check(f.size() >= kLegacyHeaderBytes, path + ": truncated llama2.c header (" + std::to_string(f.size()) +
                                              " bytes; the legacy header is 28)");
    h.bytes = kLegacyHeaderBytes;
  }
  int32_t v[7];
  std::memcpy(v, p, sizeof(v));
  h.dim = v[0], h.hidden = v[1], h.layers = v[2], h.heads = v[3], h.kv_heads = v[4], h.vocab = v[5], h.seq_len = v[6];
  if (h.version == 1) {
    h.shared_classifier = p[28] != 0;
  } else {
    h.shared_classifier = h.vocab > 0;
    if (h.vocab < 0 && h.vocab != INT32_MIN) h.vocab = -h.vocab;
  }
  const std::string dims = "dim " + std::to_string(h.dim) + ", hidden_dim " + std::to_string(h.hidden) +
                           ", n_layers " + std::to_string(h.layers) + ", n_heads " + std::to_string(h.heads) +
                           ", n_kv_heads " + std::to_string(h.kv_heads) + ", vocab_size " + std::to_string(h.vocab) +
                           ", seq_len " + std::to_string(h.seq_len);
  const bool ok = h.dim > 0 && h.hidden > 0 && h.layers > 0 && h.heads > 0 && h.kv_heads > 0 && h.vocab > 0 &&
                  h.seq_len > 0 && h.dim % h.heads == 0 && h.heads % h.kv_heads == 0 && (h.dim / h.heads) % 2 == 0;
  check(ok, path + ": not a llama2.c checkpoint: inconsistent header (" + dims + ")");
  return h;
}

// The tensors of the file in order, each [rows, cols] per layer (`per_layer`
// copies), as float offsets from the end of the header.
struct Segment {
  int64_t rows = 0, cols = 0;
  bool per_layer = false;
  size_t offset = 0;  // in floats
};

std::map<std::string, Segment> layout(const Header& h, unsigned __int128& total_floats) {
  const int64_t d = h.dim, hd = h.dim / h.heads, q = h.heads * hd, kv = h.kv_heads * hd, f = h.hidden;
  const std::map<std::string, Segment> shapes = {
      {"tok", {h.vocab, d, false}},   {"rms_att", {1, d, true}}, {"wq", {q, d, true}},
      {"wk", {kv, d, true}},          {"wv", {kv, d, true}},     {"wo", {d, q, true}},
      {"rms_ffn", {1, d, true}},      {"w1", {f, d, true}},      {"w2", {d, f, true}},
      {"w3", {f, d, true}},           {"rms_final", {1, d, false}},
      {"freq_cis", {2 * int64_t{h.seq_len}, hd / 2, false}},  // real and imaginary halves (int32 x 2 overflows)
      {"wcls", {h.vocab, d, false}}};
  std::vector<std::string> order =
      h.version == 1
          ? std::vector<std::string>{"rms_att", "rms_ffn", "rms_final", "tok", "wq", "wk", "wv", "wo", "w1", "w2", "w3"}
          : std::vector<std::string>{"tok", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3",
                                     "rms_final", "freq_cis"};
  if (!h.shared_classifier) order.push_back("wcls");
  std::map<std::string, Segment> out;
  // In 128 bits: three int32 header fields multiplied can pass 64 bits; the
  // offsets are used only once the total has matched the file size.
  unsigned __int128 at = 0;
  for (const std::string& name : order) {
    Segment s = shapes.at(name);
    s.offset = static_cast<size_t>(at);
    at += static_cast<unsigned __int128>(s.rows * s.cols) * static_cast<unsigned>(s.per_layer ? h.layers : 1);
    out[name] = s;
  }
  total_floats = at;
  return out;
}

// Hugging Face row r of a Q/K matrix with heads of `head_dim` rows comes from
// llama2.c row h*d + 2i + j, where r = h*d + j*(d/2) + i: pairs (2i, 2i+1)
// become halves (i, i + d/2).
int64_t interleaved_source_row(int64_t r, int64_t head_dim) {
  const int64_t h = r / head_dim, rem = r % head_dim, half = head_dim / 2;
  return h * head_dim + 2 * (rem % half) + rem / half;
}

void write_text(const std::string& path, const std::string& text) {
  OutputFile out(path);
  out.write(text.data(), text.size());
  out.commit();
}

Llama2cConvertResult write_directory(const std::string& model_path, const std::string& tokenizer_path,
                                     const std::string& dir) {
  const MappedFile file(model_path);
  const Header h = read_header(file);
  unsigned __int128 floats = 0;
  const auto segs = layout(h, floats);
  const unsigned __int128 expected = h.bytes + 4 * floats;
  const std::string implied = expected > UINT64_MAX ? "more than 2^64" : std::to_string(static_cast<uint64_t>(expected));
  check(file.size() == expected, model_path + ": the llama2.c header (dim " + std::to_string(h.dim) + ", " +
                                     std::to_string(h.layers) + " layers, vocab " + std::to_string(h.vocab) +
                                     ") implies " + implied + " bytes, the file has " + std::to_string(file.size()));
  tok::SpmConfig vocab;
  if (!tokenizer_path.empty()) vocab = read_llama2c_tokenizer(tokenizer_path, h.vocab);

  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = h.vocab, c.hidden_size = h.dim, c.intermediate_size = h.hidden, c.num_layers = h.layers;
  c.num_heads = h.heads, c.num_kv_heads = h.kv_heads, c.head_dim = h.dim / h.heads;
  c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0, c.max_position_embeddings = h.seq_len;
  c.tie_word_embeddings = h.shared_classifier;
  c.bos_token_id = tokenizer_path.empty() ? 1 : vocab.bos_id;
  c.eos_token_ids = {tokenizer_path.empty() ? 2 : vocab.eos_id};
  c.torch_dtype = "float32";
  validate_config(c, model_path);

  const auto* base = reinterpret_cast<const float*>(file.data() + h.bytes);
  std::vector<safetensors::TensorToWrite> tensors;
  std::vector<std::vector<float>> permuted;  // owns the reordered Q/K matrices
  permuted.reserve(2 * static_cast<size_t>(h.layers));
  auto add = [&](const std::string& name, const std::string& seg, int layer, bool permute_rows = false) {
    const Segment& s = segs.at(seg);
    const size_t n = static_cast<size_t>(s.rows * s.cols);
    const float* src = base + s.offset + (layer >= 0 ? n * static_cast<size_t>(layer) : 0);
    std::vector<int64_t> shape = s.rows == 1 ? std::vector<int64_t>{s.cols} : std::vector<int64_t>{s.rows, s.cols};
    if (permute_rows) {
      std::vector<float>& out = permuted.emplace_back(n);
      for (int64_t r = 0; r < s.rows; ++r)
        std::memcpy(out.data() + r * s.cols, src + interleaved_source_row(r, c.head_dim) * s.cols, 4 * s.cols);
      src = out.data();
    }
    tensors.push_back({name, DType::F32, std::move(shape), src, 4 * n});
  };
  add("model.embed_tokens.weight", "tok", -1);
  for (int l = 0; l < h.layers; ++l) {
    add(hf_layer_tensor(l, "input_layernorm.weight"), "rms_att", l);
    add(hf_layer_tensor(l, "self_attn.q_proj.weight"), "wq", l, true);
    add(hf_layer_tensor(l, "self_attn.k_proj.weight"), "wk", l, true);
    add(hf_layer_tensor(l, "self_attn.v_proj.weight"), "wv", l);
    add(hf_layer_tensor(l, "self_attn.o_proj.weight"), "wo", l);
    add(hf_layer_tensor(l, "post_attention_layernorm.weight"), "rms_ffn", l);
    add(hf_layer_tensor(l, "mlp.gate_proj.weight"), "w1", l);
    add(hf_layer_tensor(l, "mlp.down_proj.weight"), "w2", l);
    add(hf_layer_tensor(l, "mlp.up_proj.weight"), "w3", l);
  }
  add("model.norm.weight", "rms_final", -1);
  if (!h.shared_classifier) add("lm_head.weight", "wcls", -1);

  fs::create_directories(dir);
  safetensors::write_file((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_text((fs::path(dir) / "config.json").string(), config_to_hf_json(c).dump(2) + "\n");
  if (!tokenizer_path.empty()) tok::write_sentencepiece_model(vocab, (fs::path(dir) / "tokenizer.model").string());
  return {h.version, h.shared_classifier, !tokenizer_path.empty(), c.parameter_count()};
}

// Removes a scratch directory however the conversion ends.
struct ScratchDir {
  fs::path path;
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

tok::SpmConfig read_llama2c_tokenizer(const std::string& path, int vocab_size) {
  const std::string file = read_file_bounded(path, kMaxTextBytes);
  size_t p = 4;
  check(file.size() >= p, path + ": truncated llama2.c tokenizer (no max_token_length)");
  tok::SpmConfig c;
  while (p < file.size()) {
    const std::string where = path + ": token " + std::to_string(c.tokens.size());
    check(file.size() - p >= 8, where + ": truncated (score and length need 8 bytes)");
    float score = 0;
    int32_t len = 0;
    std::memcpy(&score, file.data() + p, 4);
    std::memcpy(&len, file.data() + p + 4, 4);
    p += 8;
    check(len >= 0 && static_cast<size_t>(len) <= file.size() - p,
          where + ": length " + std::to_string(len) + " runs past the end of the file");
    std::string t = file.substr(p, static_cast<size_t>(len));
    p += static_cast<size_t>(len);
    int32_t type = tok::kTokenNormal;
    if (t == "\n<s>\n" || t == "\n</s>\n") {
      t = t.substr(1, t.size() - 2);  // tokenizer.py wrapped BOS/EOS in newlines for printing
      type = tok::kTokenControl;
    } else if (t == "<unk>") {
      type = tok::kTokenUnknown;
    } else if (tok::parse_byte_token(t) >= 0) {
      type = tok::kTokenByte;
    } else {
      // tokenizer.py wrote SentencePiece's U+2581 as a space.
      std::string escaped;
      for (char ch : t) escaped += ch == ' ' ? std::string("\xE2\x96\x81") : std::string(1, ch);
      t = std::move(escaped);
    }
    const auto id = static_cast<int32_t>(c.tokens.size());
    if (t == "<s>" && type == tok::kTokenControl) c.bos_id = id;
    if (t == "</s>" && type == tok::kTokenControl) c.eos_id = id;
    if (type == tok::kTokenUnknown) c.unk_id = id;
    c.tokens.push_back(std::move(t));
    c.scores.push_back(score);
    c.types.push_back(type);
  }
  check(static_cast<int64_t>(c.tokens.size()) == vocab_size,
        path + ": holds " + std::to_string(c.tokens.size()) + " tokens, the model's vocabulary has " +
            std::to_string(vocab_size));
  if (c.eos_id >= 0) c.eos_ids = {c.eos_id};
  return c;
}

Llama2cConvertResult convert_llama2c(const std::string& model_path, const std::string& tokenizer_path,
                                     const std::string& out, GgufExportType gguf_type) {
  if (!out.ends_with(".gguf")) return write_directory(model_path, tokenizer_path, out);
  const ScratchDir scratch{fs::path(out + ".llama2c.tmp")};
  std::error_code ec;
  fs::remove_all(scratch.path, ec);
  const Llama2cConvertResult r = write_directory(model_path, tokenizer_path, scratch.path.string());
  const auto model = Model::load(scratch.path.string());
  GgufExportOptions opts;
  opts.name = fs::path(model_path).stem().string();
  opts.type = gguf_type;
  const GgufExportResult g = export_gguf(*model, out, opts);
  check(!r.tokenizer || g.tokenizer_embedded, out + ": the converted tokenizer was not embedded: " + g.tokenizer_note);
  return r;
}

}  // namespace podkv
