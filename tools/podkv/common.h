// Pieces shared by the podkv subcommands: loading, prompt ids, errors.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kv/kv_cache.h"
#include "model/model.h"
#include "policy/kv_options.h"
#include "tokenizer/tokenizer.h"

namespace podkv::cli {

// Options for giving a prompt as text or ids.
struct PromptOptions {
  std::string text;
  bool text_given = false;
  std::string ids;       // "1,2,3"
  std::string ids_file;  // one id per line, or a safetensors file with an integer tensor input_ids
  bool no_bos = false;
};

void add_prompt_options(CLI::App& cmd, PromptOptions& o, const char* text_flag);

// The tokenizer that travels with a model (directory or GGUF), or null when it has none.
std::unique_ptr<Tokenizer> load_model_tokenizer(const Model& model);

// Prompt ids from the options; text needs a tokenizer. An empty text prompt is
// BOS alone. Throws Error naming the option at fault.
std::vector<int32_t> prompt_ids(const PromptOptions& o, const Tokenizer* tokenizer, const ModelConfig& config);

std::vector<int32_t> parse_id_list(const std::string& text, const std::string& what);
// The same list syntax for sizes (bench's -p, -n, -d, -b): an item that is not an integer in
// 0..2^31-1 is an Error "WHAT: 'item' is not NOUN".
std::vector<int32_t> parse_int_list(const std::string& text, const std::string& what, const std::string& noun);
std::vector<int32_t> read_ids_file(const std::string& path);

// The KV-cache options (struct KvOptions, policy/kv_options.h) as flags, shared
// by generate, logits, bench, info and serve. `kv_dtype_default` is what --help
// says an empty --kv-dtype means for the command.
void add_kv_options(CLI::App& cmd, KvOptions& o, const std::string& kv_dtype_default = "the model's float type");
// The policy settings alone (--pod-config ... --tau), for commands that take a
// list of policies in their own --kv.
void add_kv_settings(CLI::App& cmd, KvOptions& o, const std::string& kv_dtype_default = "the model's float type");

// A KV cache with room for `batch` sequences of up to `context` tokens each,
// prefilled in chunks of `chunk` tokens.
std::unique_ptr<KvCache> make_cache(const KvLayout& layout, int64_t context, int batch = 1, int64_t chunk = 256,
                                    KvDType dtype = KvDType::F32, int page_tokens = 16);
// --page-tokens of generate and serve: the given value (1..4096), or with 0 the device's default: 16 on
// the CPU; 64 on CUDA, where every step builds and sends the page tables of its sequences (one entry per
// page of every layer, KV head and kind). H200, Llama-3-8B shape, decode at 8K tokens (--profile): a
// batch-64 step took 115.7 ms with 16-token pages, 82.6 with 64 and 67.1 with 256 (the GPU's attention
// the same, the host's part and the upload smaller); batch 8: 20.1, 15.9 and 13.7 ms.
int page_tokens_for(int requested, const std::string& device);
// --prefill-chunk of generate and bench: the given number of prompt tokens per forward step, or with
// 0 the device's default: 256 on the CPU; 8192 on CUDA, where larger steps keep the tensor cores busy
// (H200, Llama-3-8B shape, a 32K prompt: 20.1-20.2K tok/s in chunks of 2048, 20.5K with 4096 to
// 16384; chunks of 256 are GEMMs too small to fill the GPU). H100, session 40: 8192 against 4096
// 1.020x, 1.014x, 1.015x and 1.008x in four interleaved passes on two machines, for about 0.6 GB more
// of step buffers (a lean 8,192-row step of that shape: about 0.94 GB with the bf16 staging).
int64_t prefill_chunk_for(int64_t requested, const std::string& device);
std::unique_ptr<KvCache> make_dense_cache(const ModelConfig& config, int64_t context);

// Range checks of the options that mean the same in every command (-t): one
// error line naming the option instead of a silently ignored value. Called
// once after every command is added.
void add_shared_option_checks(CLI::App& app);

// --exact-quant (generate, logits, bench): the exact quantized GEMV (x kept in
// float32) instead of the default Int8 one (QuantDot, ops/matmul.h).
void add_exact_quant_option(CLI::App& cmd, bool& exact_quant);
// Sets the GEMV's QuantDot mode from that flag.
void apply_exact_quant(bool exact_quant);

// Bytes from a size like "8G", "512M", "1024"; throws Error naming `option`.
size_t parse_bytes(const std::string& text, const std::string& option);

}  // namespace podkv::cli
