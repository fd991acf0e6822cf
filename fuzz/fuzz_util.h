// Shared by the libFuzzer harnesses. The parsers read files (map or open a
// path), so each input is written to a file in a per-process scratch folder
// (on /dev/shm when it exists: no disk traffic), removed at exit. podkv::Error is the expected
// answer to bad input; any other exception escapes and libFuzzer reports it.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace podkv::fuzz {

inline const std::string& scratch_dir() {
  // Never destroyed (a static reference to a heap string), so the exit handler
  // that removes the folder can still read it after static destructors ran.
  static const std::string& dir = *[] {
    namespace fs = std::filesystem;
    const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    const fs::path d = base / ("podkv_fuzz_" + std::to_string(getpid()));
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return new std::string(d.string());
  }();
  return dir;
}

// Writes `size` bytes to scratch_dir()/name and returns the path.
inline std::string write_file(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) __builtin_trap();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  return path;
}

inline std::string write_file(const std::string& name, const std::string& text) {
  return write_file(name, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

}  // namespace podkv::fuzz
