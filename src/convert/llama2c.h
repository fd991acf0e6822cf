// karpathy's llama2.c checkpoints (.bin) and tokenizers (tokenizer.bin),
// turned into a Hugging Face model directory or a GGUF file.
//
// Checkpoints, float32 little-endian:
//  - legacy: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//    vocab_size, seq_len; a negative vocab_size means a separate classifier),
//    then token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3,
//    rms_final, freq_cis_real, freq_cis_imag (seq_len * head_dim / 2 each,
//    skipped: RoPE is recomputed), [wcls];
//  - version 1 ("ak42"): uint32 magic 0x616b3432, int32 version 1, the same 7
//    int32, uint8 shared_classifier, zero padding to 256 bytes; then rms_att,
//    rms_ffn, rms_final, token_embedding, wq, wk, wv, wo, w1, w2, w3, [wcls].
//    (Versions 2+ hold llama2.c's own int8 groups and are refused by number.)
// Each layered tensor holds all layers, layer after layer. The file size must
// equal what the header implies.
//
// llama2.c's RoPE rotates adjacent pairs (2i, 2i+1); Hugging Face's rotates
// halves (i, i + d/2). The rows of wq and wk are permuted per head as
// transformers' convert_llama_weights_to_hf.py permutes Meta's checkpoints,
// so the directory is an ordinary LlamaForCausalLM (rms_norm_eps 1e-5 and
// rope_theta 10000, llama2.c's constants).
//
// tokenizer.bin: int32 max_token_length, then per token float32 score, int32
// length, bytes; as many tokens as the model's vocabulary. It was exported
// from a SentencePiece BPE model with U+2581 written as a space and BOS/EOS
// as "\n<s>\n" / "\n</s>\n"; both are undone, and "<0xXX>" pieces become byte
// tokens, "<unk>" the unknown one.
#pragma once

#include <string>

#include "convert/gguf_export.h"
#include "tokenizer/spm.h"

namespace podkv {

// The vocabulary of a llama2.c tokenizer.bin holding `vocab_size` tokens;
// throws Error naming PATH when it is truncated, has another count, or a
// length is out of range.
tok::SpmConfig read_llama2c_tokenizer(const std::string& path, int vocab_size);

struct Llama2cConvertResult {
  int version = 0;  // 0 legacy, 1 "ak42" version 1
  bool shared_classifier = true;
  bool tokenizer = false;  // a tokenizer was written
  int64_t parameters = 0;
};

// Converts the checkpoint at `model_path` (and the tokenizer at
// `tokenizer_path` when not empty) to `out`: a directory (config.json,
// model.safetensors F32, tokenizer.model) or, when `out` ends in ".gguf", a
// GGUF file (via such a directory beside it, removed afterwards; the tokenizer
// embedded as a "llama" vocabulary; matrices stored as `gguf_type`). Throws
// Error naming the file at fault.
Llama2cConvertResult convert_llama2c(const std::string& model_path, const std::string& tokenizer_path,
                                     const std::string& out, GgufExportType gguf_type = GgufExportType::Keep);

}  // namespace podkv
