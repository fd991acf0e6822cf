#include "train/token_file.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "util/error.h"
#include "util/little_endian.h"
#include "util/mapped_file.h"

namespace podkv::train {

namespace {

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Ids of `Width` bytes each, checked against the file's vocabulary; returns
// the index of the first bad one, or n.
template <int Width>
size_t decode_ids(const uint8_t* in, size_t n, uint32_t vocab_size, int32_t* out) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t id = static_cast<uint32_t>(get_le(in + i * Width, Width));
    if (id >= vocab_size) return i;
    out[i] = static_cast<int32_t>(id);
  }
  return n;
}

// Token ids are converted in blocks of this many, so writing needs no second
// copy of the corpus.
constexpr size_t kBlockTokens = size_t{1} << 16;

}  // namespace

bool is_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[sizeof kTokenFileMagic] = {};
  return in && in.read(magic, sizeof magic) && std::memcmp(magic, kTokenFileMagic, sizeof magic) == 0;
}

TokenFileHeader write_token_file(const std::string& path, const std::vector<int32_t>& tokens, int32_t vocab_size,
                                 uint64_t fingerprint) {
  check(vocab_size > 0, path + ": vocabulary size must be > 0");
  TokenFileHeader h;
  h.id_bytes = vocab_size <= 65536 ? 2 : 4;
  h.vocab_size = static_cast<uint32_t>(vocab_size);
  h.fingerprint = fingerprint;
  h.tokens = tokens.size();
  uint8_t header[kTokenFileHeaderBytes] = {};
  std::memcpy(header, kTokenFileMagic, sizeof kTokenFileMagic);
  put_le(header + 8, h.version, 4);
  put_le(header + 12, h.id_bytes, 4);
  put_le(header + 16, h.vocab_size, 4);
  put_le(header + 24, h.fingerprint, 8);
  put_le(header + 32, h.tokens, 8);
  OutputFile out(path);
  out.write(header, sizeof header);
  std::vector<uint8_t> block;
  for (size_t start = 0; start < tokens.size(); start += kBlockTokens) {
    const size_t n = std::min(kBlockTokens, tokens.size() - start);
    block.resize(n * h.id_bytes);
    for (size_t i = 0; i < n; ++i) {
      const int32_t id = tokens[start + i];
      if (id < 0 || id >= vocab_size)
        throw Error(path + ": token " + std::to_string(start + i) + " is id " + std::to_string(id) +
                    ", outside the vocabulary (" + std::to_string(vocab_size) + ")");
      put_le(&block[i * h.id_bytes], static_cast<uint32_t>(id), static_cast<int>(h.id_bytes));
    }
    out.write(block.data(), block.size());
  }
  out.commit();
  return h;
}

TokenFileHeader read_token_file(const std::string& path, std::vector<int32_t>& out,
                                const TokenizerIdentity* expected) {
  const MappedFile file(path);
  const uint8_t* data = file.data();
  const size_t size = file.size();
  if (size < sizeof kTokenFileMagic || std::memcmp(data, kTokenFileMagic, sizeof kTokenFileMagic) != 0)
    throw Error(path + ": not a podkv token file (no PODKVTOK magic)");
  if (size < kTokenFileHeaderBytes)
    throw Error(path + ": truncated token file (" + std::to_string(size) + " bytes, shorter than the " +
                std::to_string(kTokenFileHeaderBytes) + "-byte header)");
  TokenFileHeader h;
  h.version = static_cast<uint32_t>(get_le(data + 8, 4));
  h.id_bytes = static_cast<uint32_t>(get_le(data + 12, 4));
  h.vocab_size = static_cast<uint32_t>(get_le(data + 16, 4));
  h.fingerprint = get_le(data + 24, 8);
  h.tokens = get_le(data + 32, 8);
  if (h.version != kTokenFileVersion)
    throw Error(path + ": token file format version " + std::to_string(h.version) + ", this podkv reads version " +
                std::to_string(kTokenFileVersion));
  if (h.id_bytes != 2 && h.id_bytes != 4)
    throw Error(path + ": corrupt token file (" + std::to_string(h.id_bytes) + " bytes per id, expected 2 or 4)");
  if (h.vocab_size == 0 || h.vocab_size > static_cast<uint32_t>(INT32_MAX) || (h.id_bytes == 2 && h.vocab_size > 65536))
    throw Error(path + ": corrupt token file (vocabulary size " + std::to_string(h.vocab_size) + " with " +
                std::to_string(h.id_bytes) + "-byte ids)");
  if (get_le(data + 20, 4) != 0) throw Error(path + ": corrupt token file (reserved header field not 0)");
  const size_t payload = size - kTokenFileHeaderBytes;
  if (h.tokens > payload / h.id_bytes)
    throw Error(path + ": truncated token file (the header says " + std::to_string(h.tokens) + " tokens, " +
                std::to_string(payload / h.id_bytes) + " are there)");
  if (payload != h.tokens * h.id_bytes)
    throw Error(path + ": corrupt token file (" + std::to_string(payload - h.tokens * h.id_bytes) +
                " bytes after the header's " + std::to_string(h.tokens) + " tokens)");
  if (h.tokens == 0) throw Error(path + ": the token file holds no tokens");
  if (expected != nullptr) check_token_file_tokenizer(path, h, *expected);
  const size_t before = out.size();
  out.resize(before + h.tokens);
  const uint8_t* ids = data + kTokenFileHeaderBytes;
  const size_t bad = h.id_bytes == 2 ? decode_ids<2>(ids, h.tokens, h.vocab_size, &out[before])
                                     : decode_ids<4>(ids, h.tokens, h.vocab_size, &out[before]);
  if (bad < h.tokens) {
    const uint64_t id = get_le(ids + bad * h.id_bytes, static_cast<int>(h.id_bytes));
    out.resize(before);
    throw Error(path + ": corrupt token file (token " + std::to_string(bad) + " is id " + std::to_string(id) +
                ", outside its vocabulary of " + std::to_string(h.vocab_size) + ")");
  }
  return h;
}

void check_token_file_tokenizer(const std::string& path, const TokenFileHeader& header,
                                const TokenizerIdentity& expected) {
  const int32_t vocab_size = expected.vocab_size;
  const uint64_t fingerprint = expected.fingerprint;
  if (header.vocab_size != static_cast<uint32_t>(vocab_size))
    throw Error(path + ": token file made for a vocabulary of " + std::to_string(header.vocab_size) +
                " tokens, the tokenizer has " + std::to_string(vocab_size) +
                "; run podkv tokenize-data again with this tokenizer");
  if (header.fingerprint != fingerprint)
    throw Error(path + ": token file made by another tokenizer (fingerprint " + hex(header.fingerprint) +
                ", this tokenizer's is " + hex(fingerprint) + "); run podkv tokenize-data again with this tokenizer");
}

}  // namespace podkv::train
