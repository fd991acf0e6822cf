// safetensors file: header length, JSON header, dtypes, shapes, offsets, overlaps.
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = podkv::fuzz::write_file("model.safetensors", data, size);
  try {
    const auto file = podkv::safetensors::File::open(path);
    uint64_t checksum = 0;
    for (const auto& [name, t] : file.tensors()) {
      // Every byte the reader hands out must lie inside the file, aligned for its dtype.
      if (t.nbytes != podkv::dtype_bytes(t.dtype, static_cast<size_t>(t.elements()))) __builtin_trap();
      for (size_t i = 0; i < t.nbytes; ++i) checksum += t.data[i];
      if (t.dtype == podkv::DType::F32 || t.dtype == podkv::DType::F16 || t.dtype == podkv::DType::BF16) {
        float first[4];
        const size_t n = std::min<size_t>(4, static_cast<size_t>(t.elements()));
        podkv::to_f32(t.dtype, t.data, first, n);
      }
    }
    for (const auto& [key, value] : file.metadata()) checksum += key.size() + value.size();
    if (checksum == 1) std::fputc(' ', stderr);  // keeps the reads
  } catch (const podkv::Error&) {
  }
  return 0;
}
