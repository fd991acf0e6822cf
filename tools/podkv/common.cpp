#include "common.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "ops/matmul.h"
#include "policy/policies.h"
#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv::cli {

namespace fs = std::filesystem;

void add_prompt_options(CLI::App& cmd, PromptOptions& o, const char* text_flag) {
  cmd.add_option(text_flag, o.text, "prompt text (needs the model's tokenizer)")
      ->each([&o](const std::string&) { o.text_given = true; });
  cmd.add_option("--ids", o.ids, "prompt as comma-separated token ids");
  cmd.add_option("--ids-file", o.ids_file, "prompt ids: one integer per line, or a safetensors file with an integer tensor input_ids");
  cmd.add_flag("--no-bos", o.no_bos, "do not add BOS when tokenizing the prompt text");
}

std::unique_ptr<Tokenizer> load_model_tokenizer(const Model& model) {
  if (model.gguf_file() != nullptr) {
    if (model.gguf_file()->find("tokenizer.ggml.model") == nullptr) return nullptr;
    return load_gguf_tokenizer(*model.gguf_file());
  }
  const fs::path dir = model.path();
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer.gguf"})
    if (fs::exists(dir / name)) return load_tokenizer(dir.string());
  return nullptr;
}

std::vector<int32_t> parse_id_list(const std::string& text, const std::string& what) {
  return parse_int_list(text, what, "a token id");
}

std::vector<int32_t> parse_int_list(const std::string& text, const std::string& what, const std::string& noun) {
  std::vector<int32_t> ids;
  std::string item;
  std::stringstream in(text);
  while (std::getline(in, item, ',')) {
    size_t a = item.find_first_not_of(" \t\r\n"), b = item.find_last_not_of(" \t\r\n");
    if (a == std::string::npos) continue;
    item = item.substr(a, b - a + 1);
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      throw Error(what + ": '" + item + "' is not " + noun);
    }
  }
  return ids;
}

std::vector<int32_t> read_ids_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open");
  if (path.ends_with(".safetensors")) {
    auto file = safetensors::File::open(path);
    const safetensors::TensorView* t = file.find("input_ids");
    if (t == nullptr) throw Error(path + ": no tensor 'input_ids'");
    std::vector<int32_t> ids(static_cast<size_t>(t->elements()));
    for (size_t i = 0; i < ids.size(); ++i) {
      int64_t v;
      if (t->dtype == DType::I64) std::memcpy(&v, t->data + 8 * i, 8);
      else if (t->dtype == DType::I32) { int32_t w; std::memcpy(&w, t->data + 4 * i, 4); v = w; }
      else throw Error(path + ": tensor 'input_ids' must be I32 or I64, not " + dtype_name(t->dtype));
      if (v < 0 || v > INT32_MAX)
        throw Error(path + ": tensor 'input_ids' holds " + std::to_string(v) + ", not a token id");
      ids[i] = static_cast<int32_t>(v);
    }
    return ids;
  }
  std::string text = read_file_bounded(path, kMaxTextBytes, "--ids-file");
  for (char& ch : text) if (ch == '\n' || ch == ' ' || ch == '\t') ch = ',';
  return parse_id_list(text, path);
}

std::vector<int32_t> prompt_ids(const PromptOptions& o, const Tokenizer* tokenizer, const ModelConfig& config) {
  const int given = (o.text_given ? 1 : 0) + (!o.ids.empty() ? 1 : 0) + (!o.ids_file.empty() ? 1 : 0);
  if (given > 1) throw Error("give the prompt one way: text, --ids or --ids-file");
  std::vector<int32_t> ids;
  if (!o.ids.empty()) ids = parse_id_list(o.ids, "--ids");
  else if (!o.ids_file.empty()) ids = read_ids_file(o.ids_file);
  else if (o.text_given && !o.text.empty()) {
    if (tokenizer == nullptr) throw Error("the model has no tokenizer: give the prompt with --ids or --ids-file");
    ids = tokenizer->encode(o.text, !o.no_bos);
  }
  if (ids.empty()) {
    const int bos = tokenizer != nullptr && tokenizer->bos_id() >= 0 ? tokenizer->bos_id() : config.bos_token_id;
    if (bos < 0) throw Error("empty prompt and the model has no BOS token: give a prompt");
    ids.push_back(bos);
  }
  const std::string source = !o.ids.empty() ? "--ids" : !o.ids_file.empty() ? "--ids-file " + o.ids_file : "the prompt";
  for (int32_t id : ids)
    if (id >= config.vocab_size)
      throw Error(source + ": token id " + std::to_string(id) + " is outside the vocabulary (" +
                  std::to_string(config.vocab_size) + " tokens)");
  return ids;
}

void add_kv_options(CLI::App& cmd, KvOptions& o, const std::string& kv_dtype_default) {
  cmd.add_option("--kv", o.policy, std::string("KV-cache policy: ") + known_kv_policies())->capture_default_str();
  add_kv_settings(cmd, o, kv_dtype_default);
}

void add_kv_settings(CLI::App& cmd, KvOptions& o, const std::string& kv_dtype_default) {
  // Range checks here make bad values one error line naming the option.
  cmd.add_option("--pod-config", o.pod_config, "pod.json for --kv pod (default: MODEL/pod.json)");
  cmd.add_option("--pod-group", o.pod_group, "--kv pod with uniform blocks of G layers instead of a pod.json")
      ->check(CLI::Range(1, 1 << 20));
  cmd.add_option("--sink", o.sink, "sink tokens for --kv streaming, h2o, snapkv and --pod-group")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))->capture_default_str();
  cmd.add_option("--recent", o.recent, "recent-window tokens for --kv streaming, h2o, snapkv and --pod-group")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))->capture_default_str();
  cmd.add_option("--budget", o.budget, "h2o, snapkv, pod+snapkv: distant tokens kept per layer (per block) and KV head")->capture_default_str();
  cmd.add_option("--window", o.window, "snapkv, pod+snapkv: observation window (last prompt queries scored)")->capture_default_str();
  cmd.add_option("--pool", o.pool, "snapkv, pod+snapkv: max-pooling width over key positions (odd)")->capture_default_str();
  cmd.add_option("--kv-dtype", o.kv_dtype, "KV entry type: f32, f16, bf16 or q8_0 (default: " + kv_dtype_default + ")");
  cmd.add_option("--tau", o.tau, "PoD: skip a non-anchor layer's distant attention when the anchor's gate >= tau (overrides pod.json)")
      ->check(CLI::Range(0.0f, 1.0f));
}

int page_tokens_for(int requested, const std::string& device) {
  if (requested < 0 || requested > 4096)
    throw Error("--page-tokens: must be in 1..4096 (0: the device's default), got " + std::to_string(requested));
  if (requested > 0) return requested;
  return device == "cuda" ? 64 : 16;
}

int64_t prefill_chunk_for(int64_t requested, const std::string& device) {
  if (requested < 0)
    throw Error("--prefill-chunk: must be at least 1 (0: the device's default), got " + std::to_string(requested));
  if (requested > 0) return requested;
  return device == "cuda" ? 8192 : 256;
}

std::unique_ptr<KvCache> make_cache(const KvLayout& layout, int64_t context, int batch, int64_t chunk, KvDType dtype,
                                    int page) {
  KvCache probe(layout, 0, page, dtype);  // sizes only: no pages
  // Worst case: the whole context is one prefill (SnapKV drops nothing before it ends).
  const int64_t pages = probe.peak_pages(0, context, std::max<int64_t>(1, std::min(chunk, context)), context);
  return std::make_unique<KvCache>(layout, static_cast<size_t>(pages) * batch * probe.page_bytes(), page, dtype);
}

std::unique_ptr<KvCache> make_dense_cache(const ModelConfig& c, int64_t context) {
  return make_cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), context);
}

void add_shared_option_checks(CLI::App& app) {
  for (CLI::App* cmd : app.get_subcommands([](CLI::App*) { return true; })) {
    if (CLI::Option* threads = cmd->get_option_no_throw("--threads")) threads->check(CLI::Range(1, 4096));
    add_shared_option_checks(*cmd);
  }
}

size_t parse_bytes(const std::string& text, const std::string& option) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    throw Error(option + ": '" + text + "' is not a size (e.g. 8G, 512M, 1048576)");
  }
  std::string unit = text.substr(used);
  double mult = 1;
  if (unit == "K" || unit == "KB" || unit == "KiB") mult = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else if (!unit.empty() && unit != "B") throw Error(option + ": unknown unit '" + unit + "' in '" + text + "'");
  const double bytes = v * mult;
  if (!(bytes >= 1 && bytes <= 0x1p60))
    throw Error(option + ": '" + text + "' is not a size between 1 byte and 1 EiB");
  return static_cast<size_t>(bytes);
}

void add_exact_quant_option(CLI::App& cmd, bool& exact_quant) {
  cmd.add_flag("--exact-quant", exact_quant,
               "quantized-weight decode: keep x in float32 (exact to ~1e-6) instead of llama.cpp's "
               "int8 x with integer dot products (the default, faster)");
}

void apply_exact_quant(bool exact_quant) { set_quant_dot(exact_quant ? QuantDot::Exact : QuantDot::Int8); }

}  // namespace podkv::cli
