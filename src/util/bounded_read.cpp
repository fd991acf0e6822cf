#include "util/bounded_read.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "util/error.h"

namespace podkv {

namespace {

std::string too_large(const std::string& name, size_t limit) {
  return name + ": larger than " + limit_string(limit) + ", the limit for this input";
}

// Appends `in` to `out` in chunks until the end of the stream; false when more
// than `limit` bytes would be held (the stream is left partly read).
bool append_bounded(std::istream& in, std::string& out, size_t limit) {
  char chunk[1 << 16];
  while (in) {
    const size_t room = limit - std::min(limit, out.size()) + 1;  // one byte over says "too large"
    in.read(chunk, static_cast<std::streamsize>(std::min(sizeof(chunk), room)));
    out.append(chunk, static_cast<size_t>(in.gcount()));
    if (out.size() > limit) return false;
  }
  return true;
}

}  // namespace

std::string limit_string(size_t bytes) {
  if (bytes >= (size_t{1} << 30) && bytes % (size_t{1} << 30) == 0) return std::to_string(bytes >> 30) + " GiB";
  if (bytes >= (size_t{1} << 20) && bytes % (size_t{1} << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= (size_t{1} << 10) && bytes % (size_t{1} << 10) == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " bytes";
}

std::string read_file_bounded(const std::string& path, size_t limit, const std::string& what) {
  namespace fs = std::filesystem;
  const std::string name = what.empty() ? path : what + " " + path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(name + ": is a directory, not a file");
  // A regular file says its size: a large one fails before any byte is read.
  if (fs::is_regular_file(path, ec)) {
    const uintmax_t size = fs::file_size(path, ec);
    if (!ec && size > limit) throw Error(too_large(name, limit) + " (" + std::to_string(size) + " bytes)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(name + ": cannot open: " + std::strerror(errno));
  std::string text;
  std::error_code size_error;
  if (const uintmax_t size = fs::file_size(path, size_error); !size_error && size <= limit) text.reserve(size);
  if (!append_bounded(in, text, limit)) throw Error(too_large(name, limit));
  if (in.bad()) throw Error(name + ": read error");
  return text;
}

std::string read_stream_bounded(std::istream& in, size_t limit, const std::string& name) {
  std::string text;
  if (!append_bounded(in, text, limit)) throw Error(too_large(name, limit));
  if (in.bad()) throw Error(name + ": read error");
  return text;
}

bool read_line_bounded(std::istream& in, std::string& line, size_t limit, const std::string& name,
                       int64_t& line_number) {
  line.clear();
  std::streambuf* buffer = in.rdbuf();
  if (buffer == nullptr || !in.good()) return false;
  bool any = false;
  for (;;) {
    const int c = buffer->sbumpc();
    if (c == std::char_traits<char>::eof()) {
      in.setstate(std::ios::eofbit);
      break;
    }
    any = true;
    if (c == '\n') break;
    if (line.size() == limit)
      throw Error(name + ": line " + std::to_string(line_number + 1) + " is longer than " + limit_string(limit) +
                  ", the limit for one line");
    line += static_cast<char>(c);
  }
  if (!any) return false;
  ++line_number;
  return true;
}

}  // namespace podkv
