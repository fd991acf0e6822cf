// podkv create-model: a model with random weights in the Hugging Face layout.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "model/create.h"
#include "tokenizer/canonical_name.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

struct CreateModelCommand {
  std::string out;
  std::string preset = "tiny";
  std::string dtype = "f32";
  std::string tokenizer;
  int vocab = 0;
  uint64_t seed = 1;
  double std = 0.05;
};

void run(const CreateModelCommand& o) {
  namespace fs = std::filesystem;
  int vocab = o.vocab;
  int bos = -1;
  std::vector<int> eos;
  if (!o.tokenizer.empty()) {
    auto tok = load_tokenizer(o.tokenizer);
    if (vocab == 0) vocab = tok->vocab_size();
    if (vocab < tok->vocab_size()) throw Error("--vocab: smaller than the tokenizer's vocabulary (" + std::to_string(tok->vocab_size()) + ")");
    bos = tok->bos_id();
    eos.assign(tok->eos_ids().begin(), tok->eos_ids().end());
  }
  if (vocab == 0) vocab = 512;
  ModelConfig c = preset_config(o.preset, vocab);
  c.bos_token_id = bos;
  c.eos_token_ids = eos;
  DType dtype;
  if (o.dtype == "f32") dtype = DType::F32;
  else if (o.dtype == "f16") dtype = DType::F16;
  else if (o.dtype == "bf16") dtype = DType::BF16;
  else throw Error("--dtype: '" + o.dtype + "' is not one of f32, f16, bf16");
  create_random_model(c, dtype, o.seed, o.std, o.out);
  if (!o.tokenizer.empty()) {
    // Under its canonical name (tokenizer.json / tokenizer.model), where the model directory looks for it.
    fs::path src = o.tokenizer;
    if (fs::is_directory(src)) src = fs::exists(src / "tokenizer.json") ? src / "tokenizer.json" : src / "tokenizer.model";
    fs::copy_file(src, fs::path(o.out) / canonical_tokenizer_name(src.string()), fs::copy_options::overwrite_existing);
  }
  std::fprintf(stderr, "wrote %s: preset %s, %.2fM parameters, %s\n", o.out.c_str(), o.preset.c_str(),
               c.parameter_count() / 1e6, o.dtype.c_str());
}

}  // namespace

void add_create_model_command(CLI::App& app) {
  auto o = std::make_shared<CreateModelCommand>();
  CLI::App* cmd = app.add_subcommand("create-model", "write a model with random weights (Hugging Face layout)");
  cmd->add_option("--out", o->out, "output directory")->required();
  cmd->add_option("--preset", o->preset, "shape: tiny, small, 100m or 1b")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "f32, f16 or bf16")->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer, "tokenizer to copy along (sets the vocabulary size)");
  cmd->add_option("--vocab", o->vocab, "vocabulary size (default: the tokenizer's, else 512)");
  cmd->add_option("--seed", o->seed, "random seed")->capture_default_str();
  cmd->add_option("--std", o->std, "standard deviation of the weights")->capture_default_str();
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
