// podkv convert: write a model (Hugging Face directory or GGUF file) as a GGUF
// file of the llama architecture, optionally converting the weight type.
#include <cstdio>

#include "commands.h"
#include "io/gguf_export.h"
#include "model/model.h"

namespace podkv::cli {

namespace {

struct ConvertCommand {
  std::string model;
  std::string out;
  std::string type = "keep";
  std::string name;
  bool no_tokenizer = false;
};

void run(const ConvertCommand& o) {
  GgufExportOptions opts;
  opts.type = parse_gguf_export_type(o.type, "--type");
  opts.name = o.name;
  opts.embed_tokenizer = !o.no_tokenizer;
  auto model = Model::load(o.model);
  const GgufExportResult r = export_gguf(*model, o.out, opts);
  std::fprintf(stderr, "wrote %s: %zu tensors, type %s, %s\n", o.out.c_str(), r.tensor_count, o.type.c_str(),
               r.tokenizer_embedded ? "tokenizer embedded" : ("no tokenizer (" + r.tokenizer_note + ")").c_str());
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto o = std::make_shared<ConvertCommand>();
  CLI::App* cmd = app.add_subcommand("convert", "write a model as a GGUF file (llama architecture)");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file")->required();
  cmd->add_option("--out", o->out, "output .gguf file")->required();
  cmd->add_option("--type", o->type, "weight type: keep, f32, f16, bf16 or q8_0")->capture_default_str();
  cmd->add_option("--name", o->name, "general.name (default: the model's name)");
  cmd->add_flag("--no-tokenizer", o->no_tokenizer, "do not embed the tokenizer");
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
