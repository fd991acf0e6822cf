// load_tokenizer: picks the reader by what PATH is.
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/gguf.h"
#include "tokenizer/canonical_name.h"
#include "tokenizer/sentencepiece_model.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_json.h"
#include "util/error.h"

namespace podkv {

namespace {

std::string ends_with_lower(const std::string& path, size_t n) {
  std::string s = path.size() >= n ? path.substr(path.size() - n) : path;
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

enum class FileKind { Gguf, Json, SentencePiece };

FileKind file_kind(const std::string& path) {
  char magic[4] = {};
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(path + ": cannot open");
    f.read(magic, 4);
  }
  // The content decides where it can (GGUF has a magic number); the name
  // decides between the two formats without one.
  if (std::memcmp(magic, "GGUF", 4) == 0) return FileKind::Gguf;
  if (ends_with_lower(path, 5) == ".json") return FileKind::Json;
  if (ends_with_lower(path, 6) == ".model") return FileKind::SentencePiece;
  if (magic[0] == '{') return FileKind::Json;
  return FileKind::SentencePiece;  // a protobuf has no magic number
}

std::unique_ptr<Tokenizer> load_file(const std::string& path) {
  switch (file_kind(path)) {
    case FileKind::Gguf: {
      const auto file = gguf::File::open(path);
      return load_gguf_tokenizer(file);
    }
    case FileKind::Json: return tok::load_tokenizer_json(path);
    case FileKind::SentencePiece: break;
  }
  return tok::load_sentencepiece_model(path);
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path + ": no such file or directory");
  if (!fs::is_directory(path, ec)) return load_file(path);
  const fs::path dir(path);
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer.gguf"})
    if (fs::exists(dir / name)) return load_file((dir / name).string());
  std::vector<fs::path> ggufs;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && ends_with_lower(e.path().string(), 5) == ".gguf") ggufs.push_back(e.path());
  if (ggufs.size() == 1) return load_file(ggufs[0].string());
  if (ggufs.size() > 1)
    throw Error(path + ": holds several .gguf files and no tokenizer.json or tokenizer.model; name the file");
  throw Error(path + ": holds no tokenizer.json, tokenizer.model or .gguf file");
}


std::string canonical_tokenizer_name(const std::string& file) {
  switch (file_kind(file)) {
    case FileKind::Json: return "tokenizer.json";
    case FileKind::SentencePiece: return "tokenizer.model";
    case FileKind::Gguf: break;
  }
  return "tokenizer.gguf";
}

}  // namespace podkv
