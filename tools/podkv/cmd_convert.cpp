// podkv convert: write a model (Hugging Face directory or GGUF file) as a GGUF
// file of the llama architecture, optionally converting the weight type.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "common.h"
#include "convert/compare.h"
#include "convert/gguf_export.h"
#include "convert/llama2c.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

struct ConvertCommand {
  std::string from = "auto";
  std::string tokenizer;
  std::string model;
  std::string out;
  std::string type = "keep";
  std::string name;
  bool no_tokenizer = false;
  int check_tokens = 64;
};

// Text for the logits check when the model has a tokenizer.
constexpr const char* kCheckText =
    "It was a dark and stormy night; the rain fell in torrents, except at occasional intervals, when it was "
    "checked by a violent gust of wind which swept up the streets (for it is in London that our scene lies), "
    "rattling along the housetops, and fiercely agitating the scanty flame of the lamps that struggled "
    "against the darkness. Through one of the obscurest quarters of London, and among haunts little loved "
    "by the gentlemen of the police, a man, evidently of the lowest orders, was wending his solitary way.";

// `n` ids for the check: the text above through the tokenizer (repeated as
// needed), or a fixed pseudo-random sequence when there is none.
std::vector<int32_t> check_ids(const Model& model, int n) {
  const ModelConfig& c = model.config();
  n = static_cast<int>(std::min<int64_t>(n, c.max_position_embeddings));
  std::vector<int32_t> ids;
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = load_model_tokenizer(model);
  } catch (const Error&) {
    tok = nullptr;
  }
  if (tok) {
    const std::vector<int32_t> text = tok->encode(kCheckText, true);
    while (!text.empty() && static_cast<int>(ids.size()) < n)
      ids.insert(ids.end(), text.begin(), text.begin() + std::min<size_t>(text.size(), n - ids.size()));
  }
  uint32_t state = 12345;
  while (static_cast<int>(ids.size()) < n) {
    state = state * 1664525u + 1013904223u;
    ids.push_back(static_cast<int32_t>((state >> 8) % static_cast<uint32_t>(c.vocab_size)));
  }
  return ids;
}

double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

// llama2.c checkpoint -> model directory or GGUF file.
void run_llama2c(const ConvertCommand& o) {
  const GgufExportType type = parse_gguf_export_type(o.type, "--type");
  const Llama2cConvertResult r = convert_llama2c(o.model, o.tokenizer, o.out, type);
  std::fprintf(stderr, "wrote %s: llama2.c %s checkpoint, %.2fM parameters, %s classifier, %s\n", o.out.c_str(),
               r.version == 0 ? "legacy" : "version 1", static_cast<double>(r.parameters) / 1e6,
               r.shared_classifier ? "shared" : "separate", r.tokenizer ? "tokenizer converted" : "no tokenizer");
}

void run(const ConvertCommand& o) {
  if (o.from == "llama2c") return run_llama2c(o);
  if (o.from != "auto") throw Error("--from: '" + o.from + "' is not one of auto, llama2c");
  if (!o.tokenizer.empty()) throw Error("--tokenizer: only with --from llama2c (a model's own tokenizer is embedded)");
  GgufExportOptions opts;
  opts.type = parse_gguf_export_type(o.type, "--type");
  opts.name = o.name;
  opts.embed_tokenizer = !o.no_tokenizer;
  auto model = Model::load(o.model);
  const GgufExportResult r = export_gguf(*model, o.out, opts);
  std::fprintf(stderr, "wrote %s: %zu tensors, type %s, %s%s\n", o.out.c_str(), r.tensor_count, o.type.c_str(),
               r.tokenizer_embedded ? "tokenizer embedded" : ("no tokenizer (" + r.tokenizer_note + ")").c_str(),
               r.chat_template ? ", chat template" : "");
  if (o.check_tokens <= 0) return;
  // Size and logits error of the written file against the source.
  auto written = Model::load(o.out);
  const double src_bytes = static_cast<double>(model->bytes_per_decode_token());
  const double out_bytes = static_cast<double>(written->bytes_per_decode_token());
  std::printf("size: matrices %.2f MiB (%s) -> %.2f MiB (%s), %.1f%%; file %.2f MiB\n", mib(src_bytes),
              dtype_name(model->weight_dtype()), mib(out_bytes), dtype_name(written->weight_dtype()),
              100.0 * out_bytes / src_bytes, mib(static_cast<double>(std::filesystem::file_size(o.out))));
  const LogitsComparison cmp = compare_logits(*model, *written, check_ids(*model, o.check_tokens));
  std::printf("logits vs source over %lld tokens: max relative error %.3g, rms error %.3g, top-1 agreement %.1f%%\n",
              static_cast<long long>(cmp.tokens), cmp.max_relative_error, cmp.rms_error, 100.0 * cmp.top1_agreement);
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto o = std::make_shared<ConvertCommand>();
  CLI::App* cmd = app.add_subcommand("convert", "write a model as a GGUF file (llama architecture); read llama2.c checkpoints");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file (--from llama2c: a llama2.c .bin)")->required();
  cmd->add_option("--out", o->out, "output .gguf file (--from llama2c: a directory or a .gguf file)")->required();
  cmd->add_option("--from", o->from, "source format: auto (model directory or GGUF) or llama2c")->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer, "--from llama2c: its tokenizer.bin");
  cmd->add_option("--type", o->type, "weight type: keep, f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s (q3_k), q3_k_m, q3_k_l, q4_k_s (q4_k), q4_k_m, q5_k_s (q5_k), q5_k_m, q6_k, iq4_nl or iq4_xs")
      ->capture_default_str();
  cmd->add_option("--check-tokens", o->check_tokens,
                  "tokens of the logits check against the source after writing (0 = no check)")
      ->capture_default_str();
  cmd->add_option("--name", o->name, "general.name (default: the model directory's or file's name)");
  cmd->add_flag("--no-tokenizer", o->no_tokenizer, "do not embed the tokenizer");
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
