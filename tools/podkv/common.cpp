#include "common.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/gguf.h"
#include "io/safetensors.h"
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
  if (fs::exists(dir / "tokenizer.json") || fs::exists(dir / "tokenizer.model")) return load_tokenizer(dir.string());
  return nullptr;
}

std::vector<int32_t> parse_id_list(const std::string& text, const std::string& what) {
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
      throw Error(what + ": '" + item + "' is not a token id");
    }
  }
  return ids;
}

std::vector<int32_t> read_ids_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open");
  char magic[9] = {};
  in.read(magic, 8);
  in.seekg(0);
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
      ids[i] = static_cast<int32_t>(v);
    }
    return ids;
  }
  std::stringstream all;
  all << in.rdbuf();
  std::string text = all.str();
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
  for (int32_t id : ids)
    if (id >= config.vocab_size)
      throw Error("prompt token id " + std::to_string(id) + " is outside the vocabulary (" + std::to_string(config.vocab_size) + " tokens)");
  return ids;
}

std::unique_ptr<KvCache> make_dense_cache(const ModelConfig& c, int64_t context) {
  KvLayout layout = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
  const int page = 16;
  const int64_t pages_per_stream = (context + page - 1) / page;
  const size_t budget = static_cast<size_t>(pages_per_stream) * page * c.head_dim * sizeof(float) * 2 *
                        c.num_layers * c.num_kv_heads;
  return std::make_unique<KvCache>(layout, budget, page);
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
  if (v < 0) throw Error(option + ": size must not be negative");
  return static_cast<size_t>(v * mult);
}

}  // namespace podkv::cli
