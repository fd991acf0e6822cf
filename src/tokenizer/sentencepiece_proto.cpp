// tokenizer.model as protobuf (see sentencepiece_proto.h). Field numbers are
// those of sentencepiece_model.proto:
//   ModelProto      1 pieces (SentencePiece), 2 trainer_spec, 3 normalizer_spec
//   SentencePiece   1 piece, 2 score (float), 3 type
//   TrainerSpec     3 model_type (1 unigram, 2 BPE), 4 vocab_size, 35 byte_fallback,
//                   40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id
//   NormalizerSpec  1 name, 3 add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces
#include "tokenizer/sentencepiece_proto.h"

#include <cstring>
#include <functional>
#include <string_view>

#include "util/bounded_read.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace podkv::tok {

namespace {

// Protobuf wire types.
constexpr int kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5;

struct Field {
  uint32_t number = 0;
  int wire = 0;
  uint64_t value = 0;        // kVarint, kFixed32, kFixed64
  std::string_view bytes;    // kBytes
};

// Calls `visit` for every field of the message in `msg`; throws Error naming
// `where` on a truncated or malformed encoding.
void for_each_field(std::string_view msg, const std::string& where, const std::function<void(const Field&)>& visit) {
  size_t p = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      check(p < msg.size(), where + ": truncated protobuf varint");
      const uint8_t b = static_cast<uint8_t>(msg[p++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    throw Error(where + ": protobuf varint longer than 10 bytes");
  };
  while (p < msg.size()) {
    const uint64_t tag = varint();
    Field f;
    f.number = static_cast<uint32_t>(tag >> 3);
    f.wire = static_cast<int>(tag & 7);
    check(f.number != 0, where + ": protobuf field number 0");
    if (f.wire == kVarint) {
      f.value = varint();
    } else if (f.wire == kFixed32 || f.wire == kFixed64) {
      const size_t n = f.wire == kFixed32 ? 4 : 8;
      check(msg.size() - p >= n, where + ": truncated protobuf fixed field");
      std::memcpy(&f.value, msg.data() + p, n);
      p += n;
    } else if (f.wire == kBytes) {
      const uint64_t n = varint();
      check(n <= msg.size() - p, where + ": protobuf field " + std::to_string(f.number) + " runs past the end");
      f.bytes = msg.substr(p, n);
      p += n;
    } else {
      throw Error(where + ": unsupported protobuf wire type " + std::to_string(f.wire));
    }
    visit(f);
  }
}

// Appends the protobuf encoding of fields to a byte string.
class ProtoWriter {
 public:
  void varint(uint32_t number, uint64_t v) {
    tag(number, kVarint);
    raw_varint(v);
  }
  void int32(uint32_t number, int32_t v) { varint(number, static_cast<uint64_t>(static_cast<int64_t>(v))); }
  void float32(uint32_t number, float v) {
    tag(number, kFixed32);
    char b[4];
    std::memcpy(b, &v, 4);
    out_.append(b, 4);
  }
  void bytes(uint32_t number, std::string_view s) {
    tag(number, kBytes);
    raw_varint(s.size());
    out_.append(s);
  }
  const std::string& str() const { return out_; }

 private:
  void tag(uint32_t number, int wire) { raw_varint((static_cast<uint64_t>(number) << 3) | static_cast<uint64_t>(wire)); }
  void raw_varint(uint64_t v) {
    while (v >= 0x80) {
      out_ += static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    out_ += static_cast<char>(v);
  }
  std::string out_;
};

}  // namespace

SpmConfig read_sentencepiece_vocab(const std::string& path) {
  const std::string file = read_file_bounded(path, kMaxTextBytes);
  SpmConfig c;
  int64_t model_type = 1, unk = 0, bos = 1, eos = 2;  // proto defaults: unigram, ids 0/1/2
  bool add_dummy_prefix = true;
  for_each_field(file, path, [&](const Field& f) {
    if (f.number == 1 && f.wire == kBytes) {
      const std::string where = path + ": piece " + std::to_string(c.tokens.size());
      std::string piece;
      float score = 0;
      int32_t type = kTokenNormal;
      for_each_field(f.bytes, where, [&](const Field& g) {
        if (g.number == 1 && g.wire == kBytes) piece = std::string(g.bytes);
        else if (g.number == 2 && g.wire == kFixed32) std::memcpy(&score, &g.value, 4);
        else if (g.number == 3 && g.wire == kVarint) type = static_cast<int32_t>(g.value);
      });
      check(type >= kTokenNormal && type <= kTokenByte, where + ": piece type " + std::to_string(type) + " is unknown");
      c.tokens.push_back(std::move(piece));
      c.scores.push_back(score);
      c.types.push_back(type);
    } else if (f.number == 2 && f.wire == kBytes) {
      for_each_field(f.bytes, path + ": trainer_spec", [&](const Field& g) {
        if (g.wire != kVarint) return;
        const auto v = static_cast<int64_t>(static_cast<int32_t>(g.value));
        if (g.number == 3) model_type = v;
        else if (g.number == 40) unk = v;
        else if (g.number == 41) bos = v;
        else if (g.number == 42) eos = v;
      });
    } else if (f.number == 3 && f.wire == kBytes) {
      for_each_field(f.bytes, path + ": normalizer_spec", [&](const Field& g) {
        if (g.number == 3 && g.wire == kVarint) add_dummy_prefix = g.value != 0;
      });
    }
  });
  check(!c.tokens.empty(), path + ": not a SentencePiece model (no pieces)");
  check(model_type == 2, path + ": SentencePiece model type " + std::to_string(model_type) +
                             " is not BPE (2); only BPE models run as a GGUF \"llama\" vocabulary");
  const auto n = static_cast<int64_t>(c.tokens.size());
  auto id = [&](int64_t v, const char* name) {
    check(v >= -1 && v < n, path + ": trainer_spec " + name + " " + std::to_string(v) + " is outside the " +
                                std::to_string(n) + " pieces");
    return static_cast<int32_t>(v);
  };
  c.unk_id = id(unk, "unk_id");
  c.bos_id = id(bos, "bos_id");
  c.eos_id = id(eos, "eos_id");
  if (c.eos_id >= 0) c.eos_ids = {c.eos_id};
  c.add_space_prefix = add_dummy_prefix;
  return c;
}

void write_sentencepiece_model(const SpmConfig& vocab, const std::string& path) {
  const size_t n = vocab.tokens.size();
  check(n > 0 && vocab.scores.size() == n && vocab.types.size() == n,
        path + ": a vocabulary needs as many scores and types as tokens");
  ProtoWriter model;
  bool has_bytes = false;
  for (size_t i = 0; i < n; ++i) {
    ProtoWriter piece;
    piece.bytes(1, vocab.tokens[i]);
    piece.float32(2, vocab.scores[i]);
    if (vocab.types[i] != kTokenNormal) piece.varint(3, static_cast<uint64_t>(vocab.types[i]));
    has_bytes |= vocab.types[i] == kTokenByte;
    model.bytes(1, piece.str());
  }
  ProtoWriter trainer;
  trainer.varint(3, 2);  // BPE: merges by score, as llama.cpp's "llama" vocabulary
  trainer.int32(4, static_cast<int32_t>(n));
  if (has_bytes) trainer.varint(35, 1);
  trainer.int32(40, vocab.unk_id);
  trainer.int32(41, vocab.bos_id);
  trainer.int32(42, vocab.eos_id);
  trainer.int32(43, -1);  // no pad piece
  model.bytes(2, trainer.str());
  ProtoWriter normalizer;
  normalizer.bytes(1, "identity");
  normalizer.varint(3, vocab.add_space_prefix ? 1 : 0);
  normalizer.varint(4, 0);  // keep runs of spaces, as the score-merging tokenizers do
  normalizer.varint(5, 1);
  model.bytes(3, normalizer.str());
  OutputFile out(path);
  out.write(model.str().data(), model.str().size());
  out.commit();
}

}  // namespace podkv::tok
