// Writing a loaded Model as a GGUF file of llama.cpp's "llama" architecture,
// so that the file read back (Model::load) computes the same logits.
//
// What is written, following llama.cpp's convert_hf_to_gguf.py:
//  - metadata general.* and llama.* (context_length, embedding_length,
//    block_count, feed_forward_length, head counts, key/value_length,
//    rope.freq_base, rope.dimension_count, rms epsilon, vocab_size, linear
//    rope.scaling.type/factor);
//  - tensors token_embd, output (absent when tied), output_norm and
//    blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,
//    ffn_up,ffn_down}.weight. Q and K rows are permuted per head so that RoPE
//    on adjacent pairs (2i, 2i+1) equals Hugging Face's rotate-half RoPE
//    (a model read from GGUF is already permuted and is written as it is);
//  - llama3 rope scaling as a rope_freqs.weight F32 tensor [head_dim / 2] of
//    divisors (unscaled inv_freq / scaled inv_freq), since llama.cpp has no
//    metadata key for it;
//  - norms always F32 (as llama.cpp stores 1-D tensors).
//
// Tokenizer: a model read from GGUF keeps its tokenizer.* metadata. A model
// directory's tokenizer.json is embedded (tokenizer.ggml.model "gpt2") only
// when it is a plain byte-level BPE whose pre-tokenizer is exactly GPT-2's or
// Llama 3's (pre "gpt-2" / "llama-bpe"), with no normalizer and a
// post-processor that at most prepends BOS. Without a tokenizer.json, a
// SentencePiece BPE tokenizer.model is embedded as llama.cpp's "llama"
// vocabulary (tokens, scores, token types, unk/bos/eos ids, add_bos/add_eos
// from tokenizer_config.json, add_space_prefix). Anything else (other
// pre-tokenizers or templates, unigram SentencePiece models) is skipped: the
// file then carries only the BOS/EOS ids, and the result says why. The chat
// template (chat_template.jinja, or tokenizer_config.json's chat_template)
// goes to tokenizer.chat_template.
//
// Refused with podkv::Error naming the model: attention biases (Qwen2), which
// the llama architecture has no tensors for.
#pragma once

#include <cstddef>
#include <string>

namespace podkv {

class Model;

// Storage type of the 2-D weight matrices in the written file.
//  Keep: as the model holds them. F32, F16, BF16: every matrix. Q8_0: matrices whose rows are a
//  multiple of 32 long; any other matrix is written F16 (llama.cpp's fallback).
//  Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M, Q6_K, IQ4_NL, IQ4_XS: llama-quantize's recipe
//  for the llama architecture without an importance matrix (gguf_export.cpp's recipe_dtype), with
//  llama.cpp's reference quantizers (util/quant.h), so that the tensors are the ones llama-quantize
//  writes from the same F32 weights: the output matrix (or the token embedding when the output is
//  tied to it) Q6_K; the K mixes and IQ4_NL / IQ4_XS more bits for attn_v, ffn_down and (Q2_K,
//  Q3_K_M/L) attn_output in some layers; the others the type named, the token embedding included.
//  Rows that are not whole blocks: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL, Q2_K
//  and Q3_K -> Q4_0 for rows not a multiple of 256; F16 for rows not a multiple of 32.
enum class GgufExportType {
  Keep, F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
  Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, IQ4_NL, IQ4_XS
};

// "keep", "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s" (or "q3_k"),
// "q3_k_m", "q3_k_l", "q4_k_s" (or "q4_k"), "q4_k_m", "q5_k_s" (or "q5_k"), "q5_k_m", "q6_k", "iq4_nl",
// "iq4_xs"; throws
// Error naming `option` otherwise.
GgufExportType parse_gguf_export_type(const std::string& text, const std::string& option);

struct GgufExportOptions {
  GgufExportType type = GgufExportType::Keep;
  std::string name;             // general.name; default: the model's file or directory name
  bool embed_tokenizer = true;  // embed the tokenizer when it can be expressed (see above)
};

struct GgufExportResult {
  bool tokenizer_embedded = false;
  bool chat_template = false;  // tokenizer.chat_template was written from the model directory
  std::string tokenizer_note;  // why no tokenizer was embedded (empty when one was)
  size_t tensor_count = 0;
};

// Writes `model` to `out_path` (via out_path.tmp and a rename). Holds the whole
// converted file in memory while writing.
GgufExportResult export_gguf(const Model& model, const std::string& out_path, const GgufExportOptions& opts = {});

}  // namespace podkv
