// Tokenizers: byte-level BPE from tokenizer.json, SentencePiece tokenizer.model,
// and the vocabularies stored in GGUF metadata (ggml "llama" = SentencePiece-style
// BPE with byte fallback, ggml "gpt2" = byte-level BPE with a pre-tokenizer).
// encode() gives exactly the ids Hugging Face tokenizers / SentencePiece give.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace podkv {

namespace gguf { class File; }
class Fnv1a64;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`; `add_bos` prepends BOS when the tokenizer's
  // configuration adds it (tokenizer.json post-processor, GGUF add_bos_token,
  // SentencePiece's convention), never otherwise. Special tokens written in the
  // text (e.g. "<|begin_of_text|>") are recognised as single tokens.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;

  // The raw bytes a token stands for (may be an incomplete UTF-8 sequence).
  // Special/control tokens give their text. Throws Error for an id out of range.
  virtual std::string token_bytes(int32_t id) const = 0;

  // Text of a whole sequence, as Hugging Face's decode(skip_special_tokens=False)
  // gives it (e.g. SentencePiece drops the leading space of the first token).
  virtual std::string decode(const std::vector<int32_t>& ids) const;

  virtual int32_t vocab_size() const = 0;

  // Feeds what decides the segmentation beyond the vocabulary to `hash`, in a
  // form that does not depend on the file the tokenizer came from: BPE merges
  // in rank order as (left, right, merged) ids and the model's flags;
  // SentencePiece-style piece scores. For tokenizer_fingerprint.
  virtual void hash_rules(Fnv1a64& hash) const = 0;
  int32_t bos_id() const { return bos_id_; }               // -1 when none
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  bool is_eos(int32_t id) const;

 protected:
  int32_t bos_id_ = -1;
  std::vector<int32_t> eos_ids_;
};

// Loads a tokenizer from PATH: a tokenizer.json, a tokenizer.model, a .gguf
// file, or a model directory holding one of those (tokenizer.json, then tokenizer.model,
// then tokenizer.gguf: the canonical names create-model --tokenizer copies to).
// Throws Error naming the file and the field at fault.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

// The tokenizer stored in an open GGUF file's metadata (tokenizer.ggml.*).
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const gguf::File& file);

// Turns a stream of token ids into text pieces that are always whole UTF-8:
// bytes of a character split across tokens are held until it is complete.
class StreamDecoder {
 public:
  // at_sequence_start: the first token pushed begins the text (as in decode(),
  // SentencePiece drops its leading space); false for a continuation, whose
  // first token keeps its space.
  explicit StreamDecoder(const Tokenizer& tokenizer, bool at_sequence_start = false)
      : tokenizer_(tokenizer), first_(at_sequence_start) {}
  // Text that became complete with this token (may be empty).
  std::string push(int32_t id);
  // Whatever is still held (invalid bytes become U+FFFD).
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
  bool first_;
};

}  // namespace podkv
