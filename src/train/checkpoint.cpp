#include "train/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/safetensors.h"
#include "model/config.h"
#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv::train {

namespace fs = std::filesystem;

namespace {

void write_json(const fs::path& path, const nlohmann::json& j) {
  std::ofstream f(path);
  f << j.dump(2) << "\n";
  if (!f) throw Error(path.string() + ": cannot write");
}

nlohmann::json read_json(const fs::path& path, const std::string& what) {
  if (!fs::exists(path)) throw Error(what + ": " + path.filename().string() + " is missing");
  const std::string text = read_file_bounded(path.string(), kMaxSmallJsonBytes, what + ":");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": " + path.filename().string() + ": " + e.what());
  }
}

}  // namespace

std::vector<std::string> tokenizer_files(const std::string& path) {
  std::vector<std::string> files;
  if (path.empty()) return files;
  if (!fs::is_directory(path)) {
    if (fs::exists(path) && !path.ends_with(".gguf")) files.push_back(path);
    return files;
  }
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    if (fs::exists(fs::path(path) / name)) files.push_back((fs::path(path) / name).string());
  return files;
}

void save_checkpoint(const std::string& dir, const CheckpointContents& c) {
  check(c.model != nullptr, "save_checkpoint: no model");
  const Transformer<float>& model = *c.model;
  const ModelConfig& config = model.config();
  check(!config.rope_interleaved, dir + ": cannot save a model with interleaved RoPE (a GGUF model) in the Hugging Face layout");
  const fs::path final_dir = fs::path(dir);
  const fs::path tmp = fs::path(dir + ".tmp"), old = fs::path(dir + ".old");
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    std::vector<safetensors::TensorToWrite> tensors;
    for (const TensorInfo& t : model.tensors())
      tensors.push_back({t.name, DType::F32, t.shape, model.params().data() + t.offset, t.size * sizeof(float)});
    safetensors::write_file((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
    ModelConfig written = config;
    written.torch_dtype = "float32";
    write_json(tmp / "config.json", config_to_hf_json(written));
    if (model.pod()) save_pod_config((tmp / "pod.json").string(), *model.pod());
    for (const std::string& f : tokenizer_files(c.tokenizer_path))
      fs::copy_file(f, tmp / fs::path(f).filename(), fs::copy_options::overwrite_existing);
    for (const std::string& f : c.carry_files)
      if (fs::exists(f)) fs::copy_file(f, tmp / fs::path(f).filename(), fs::copy_options::overwrite_existing);
    if (c.optimizer != nullptr) {
      const AdamW& opt = *c.optimizer;
      const int64_t n = static_cast<int64_t>(opt.first_moment().size());
      safetensors::write_file((tmp / "optimizer.safetensors").string(),
                              {{"adamw.m", DType::F32, {n}, opt.first_moment().data(), static_cast<size_t>(n) * 4},
                               {"adamw.v", DType::F32, {n}, opt.second_moment().data(), static_cast<size_t>(n) * 4}});
      nlohmann::json state = c.trainer_state;
      state["optimizer_steps"] = opt.steps();
      state["config"] = config_to_hf_json(written);
      write_json(tmp / "trainer_state.json", state);
    }
    // Swap: DIR -> DIR.old, DIR.tmp -> DIR, then drop DIR.old. A crash in
    // between leaves one complete checkpoint under DIR or DIR.old.
    fs::remove_all(old, ec);
    if (fs::exists(final_dir)) fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fs::remove_all(old, ec);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw Error(dir + ": cannot write the checkpoint (" + e.code().message() + ")");
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

nlohmann::json load_checkpoint(const std::string& dir, Transformer<float>& model, AdamW& optimizer) {
  const std::string what = "--resume " + dir;
  if (!fs::is_directory(dir)) throw Error(what + ": not a directory");
  nlohmann::json state = read_json(fs::path(dir) / "trainer_state.json", what);
  const ModelConfig saved = parse_hf_config(read_json(fs::path(dir) / "config.json", what), dir + "/config.json");
  const ModelConfig& c = model.config();
  if (const ShapeDifference d = shape_difference(saved, c); d.field != nullptr)
    throw Error(what + ": the checkpoint is of another model (" + d.field + " " + std::to_string(d.a) +
                ", this run has " + std::to_string(d.b) + ")");
  auto weights = safetensors::File::open((fs::path(dir) / "model.safetensors").string());
  for (const TensorInfo& t : model.tensors()) {
    const safetensors::TensorView* v = weights.find(t.name);
    if (v == nullptr) throw Error(what + ": model.safetensors has no tensor " + t.name);
    if (v->dtype != DType::F32 || v->shape != t.shape)
      throw Error(what + ": tensor " + t.name + " is not float32 of the model's shape");
    std::memcpy(model.params().data() + t.offset, v->data, t.size * sizeof(float));
  }
  auto opt = safetensors::File::open((fs::path(dir) / "optimizer.safetensors").string());
  for (auto [name, target] : {std::pair{"adamw.m", &optimizer.first_moment()}, std::pair{"adamw.v", &optimizer.second_moment()}}) {
    const safetensors::TensorView* v = opt.find(name);
    if (v == nullptr || v->dtype != DType::F32 || static_cast<size_t>(v->elements()) != target->size())
      throw Error(what + ": optimizer.safetensors: " + name + " is missing or of another model");
    std::memcpy(target->data(), v->data, target->size() * sizeof(float));
  }
  optimizer.set_steps(state.value("optimizer_steps", int64_t{0}));
  return state;
}

}  // namespace podkv::train
