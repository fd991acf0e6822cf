#include "tokenizer/sentencepiece_model.h"

#include "util/bounded_read.h"
#include "util/error.h"

#ifdef PODKV_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>

#include <bit>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/fingerprint.h"
#include "tokenizer/utf8.h"
#endif

namespace podkv::tok {

#ifdef PODKV_HAVE_SENTENCEPIECE

namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : path_(path) {
    // Read here, under a limit, rather than by SentencePiece (which reads any file whole).
    const std::string bytes = read_file_bounded(path, kMaxTextBytes);
    sentencepiece::util::Status status;
    try {
      status = sp_.LoadFromSerializedProto(bytes);
    } catch (const std::exception& e) {
      // Its trie builder throws on some malformed pieces (found by fuzz_sentencepiece).
      throw Error(path + ": cannot load SentencePiece model: " + e.what());
    }
    if (!status.ok()) throw Error(path + ": cannot load SentencePiece model: " + status.ToString());
    const int n = sp_.GetPieceSize();
    bytes_.resize(n);
    std::vector<AddedToken> specials;
    for (int i = 0; i < n; ++i) {
      const std::string piece = sp_.IdToPiece(i);
      if (sp_.IsByte(i)) {
        const int b = parse_byte_token(piece);
        bytes_[i] = b >= 0 ? std::string(1, static_cast<char>(b)) : piece;
      } else if (sp_.IsControl(i) || sp_.IsUnknown(i)) {
        bytes_[i] = piece;
        // SentencePiece itself reads "<s>" in text as characters; podkv's
        // contract (and llama.cpp's) is that special tokens written in the
        // text are those tokens, so they are split out before encoding.
        if (sp_.IsControl(i) && !piece.empty()) specials.push_back({piece, i, false, false, false, true});
      } else {
        std::string s;
        for (size_t p = 0; p < piece.size();) {
          if (piece.compare(p, 3, "\xE2\x96\x81") == 0) {
            s += ' ';
            p += 3;
          } else {
            s += piece[p++];
          }
        }
        bytes_[i] = std::move(s);
      }
    }
    matcher_ = AddedTokenMatcher(std::move(specials));
    bos_id_ = sp_.bos_id();
    if (sp_.eos_id() >= 0) eos_ids_.push_back(sp_.eos_id());
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
    for (const Segment& seg : matcher_.split(text)) {
      if (seg.token >= 0) {
        ids.push_back(seg.token);
        continue;
      }
      std::vector<int> part;
      const auto status = sp_.Encode(std::string(seg.text), &part);
      if (!status.ok()) throw Error(path_ + ": SentencePiece encode failed: " + status.ToString());
      ids.insert(ids.end(), part.begin(), part.end());
    }
    return ids;
  }

  std::string token_bytes(int32_t id) const override {
    if (id < 0 || id >= vocab_size())
      throw Error("token id " + std::to_string(id) + " out of range (vocabulary size " +
                  std::to_string(vocab_size()) + ")");
    return bytes_[id];
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids) s += token_bytes(id);
    // SentencePiece's dummy prefix is not part of the text.
    if (!s.empty() && s[0] == ' ') s.erase(0, 1);
    return utf8_lossy(s);
  }

  int32_t vocab_size() const override { return static_cast<int32_t>(bytes_.size()); }

  // As SpmTokenizer's (a GGUF "llama" vocabulary carries the same scores).
  void hash_rules(Fnv1a64& hash) const override {
    hash.string("scores");
    for (int32_t id = 0; id < vocab_size(); ++id) hash.u64(std::bit_cast<uint32_t>(sp_.GetScore(id)));
  }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  std::vector<std::string> bytes_;
  AddedTokenMatcher matcher_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

#else

std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path) {
  throw Error(path + ": reading a SentencePiece model needs libsentencepiece, and podkv was built without it");
}

#endif

}  // namespace podkv::tok
