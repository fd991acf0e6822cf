// The vocabulary of a SentencePiece tokenizer.model, read and written as the
// protobuf it is (sentencepiece_model.proto: ModelProto with pieces,
// trainer_spec, normalizer_spec), without libsentencepiece. Used to embed a
// tokenizer.model in GGUF as llama.cpp's "llama" vocabulary, and to write
// converted vocabularies (llama2.c's tokenizer.bin) as a tokenizer.model that
// SentencePiece and transformers' LlamaTokenizer load.
#pragma once

#include <string>

#include "tokenizer/spm.h"

namespace podkv::tok {

// Pieces, scores and piece types (SentencePiece numbers its types as GGUF's
// token_type does: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused,
// 6 byte), unk/bos/eos ids (SentencePiece's defaults 0, 1, 2 when unset; -1
// disables) and add_dummy_prefix as add_space_prefix. add_bos is true and
// add_eos false, SentencePiece's convention for Llama. Throws Error naming
// PATH when the file is not such a protobuf, its model type is not BPE (the
// only one llama.cpp's "llama" vocabulary runs exactly), or an id is out of range.
SpmConfig read_sentencepiece_vocab(const std::string& path);

// Writes `vocab` as a BPE tokenizer.model (identity normalizer, escaped
// whitespace, byte fallback when it has byte pieces) via PATH.tmp + rename.
void write_sentencepiece_model(const SpmConfig& vocab, const std::string& path);

}  // namespace podkv::tok
