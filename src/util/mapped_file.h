// A read-only memory map of a whole file. Weights are used in place from the
// map (no copy), so loading a model costs page faults, not reads.
#pragma once

#include <cstddef>
#include <cstdint>
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

}  // namespace podkv
