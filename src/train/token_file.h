// Token files: a training corpus tokenised once (podkv tokenize-data) and
// read back by podkv train / adapt --data without tokenising again.
//
// Layout (little-endian, 40-byte header, then the ids):
//   offset  type      field
//        0  char[8]   magic "PODKVTOK"
//        8  uint32    format version (1)
//       12  uint32    bytes per token id: 2 (uint16, vocabularies up to 65,536) or 4 (uint32)
//       16  uint32    vocabulary size of the tokenizer that made the file
//       20  uint32    reserved, 0
//       24  uint64    tokenizer fingerprint (tokenizer_fingerprint, tokenizer/fingerprint.h)
//       32  uint64    token count N
//       40  N ids     each below the vocabulary size
// The file is exactly 40 + N * (bytes per id) long. The ids are the stream
// load_corpus builds from text (train/data.h): each text file tokenised line
// by line without BOS, each followed by the tokenizer's EOS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace podkv::train {

inline constexpr char kTokenFileMagic[8] = {'P', 'O', 'D', 'K', 'V', 'T', 'O', 'K'};
inline constexpr uint32_t kTokenFileVersion = 1;
inline constexpr size_t kTokenFileHeaderBytes = 40;

struct TokenFileHeader {
  uint32_t version = kTokenFileVersion;
  uint32_t id_bytes = 0;    // 2 or 4
  uint32_t vocab_size = 0;
  uint64_t fingerprint = 0;
  uint64_t tokens = 0;
};

// True when the file at `path` starts with the magic (false when it is
// shorter or cannot be opened: the text reader then says what is wrong).
bool is_token_file(const std::string& path);

// Writes `tokens` (each in [0, vocab_size)) all-or-nothing (PATH.tmp, then a
// rename), as uint16 when the vocabulary fits, else uint32. Returns the header
// written. Throws Error naming the file or the bad id.
TokenFileHeader write_token_file(const std::string& path, const std::vector<int32_t>& tokens, int32_t vocab_size,
                                 uint64_t fingerprint);

// The tokenizer a token file must have been made by.
struct TokenizerIdentity {
  int32_t vocab_size = 0;
  uint64_t fingerprint = 0;
};

// Throws Error "PATH: ..." when the file was made for another vocabulary size
// or by another tokenizer (fingerprints differ).
void check_token_file_tokenizer(const std::string& path, const TokenFileHeader& header,
                                const TokenizerIdentity& expected);

// Maps the file, checks its header, its length, the tokenizer (when
// `expected` is given; before any id is read) and every id, and appends the
// ids to `out`. Throws Error "PATH: ..." for a wrong magic, another format
// version, a truncated or overlong file, another tokenizer, or an id outside
// the vocabulary.
TokenFileHeader read_token_file(const std::string& path, std::vector<int32_t>& out,
                                const TokenizerIdentity* expected = nullptr);

}  // namespace podkv::train
