// A read-only memory map of a whole file. Weights are used in place from the
// map (no copy), so loading a model costs page faults, not reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace podkv {

class MappedFile {
 public:
  MappedFile() = default;
  // Throws Error naming `path` when it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes a file all-or-nothing: bytes go to PATH.tmp, and commit() flushes it
// and renames it to PATH. Destroyed without commit() (an exception on the
// way), it removes PATH.tmp, so PATH is never left half-written.
class OutputFile {
 public:
  // Throws Error naming PATH.tmp when it cannot be created.
  explicit OutputFile(const std::string& path);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(const void* bytes, size_t count);  // throws Error on a short write
  void write_zeros(size_t count);               // padding
  uint64_t position() const { return position_; }
  void commit();

 private:
  std::string path_;
  std::string tmp_path_;
  std::FILE* file_ = nullptr;
  uint64_t position_ = 0;
};

}  // namespace podkv
