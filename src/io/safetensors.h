// safetensors files (Hugging Face): an 8-byte little-endian header length, a
// JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
// then the tensor bytes. Reading is memory-mapped and validated: header length
// and JSON, dtypes, shapes against byte counts, offsets inside the data section,
// no overlaps. Sharded checkpoints are read through model.safetensors.index.json.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "util/dtype.h"
#include "util/mapped_file.h"

namespace podkv::safetensors {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;          // F32, F16, BF16, I32, I64 (others are rejected)
  std::vector<int64_t> shape;        // row-major, as PyTorch
  const uint8_t* data = nullptr;     // into the map, or an aligned copy; aligned to the element size
  size_t nbytes = 0;
  std::string file;                  // the file it lives in, for error messages

  int64_t elements() const;
};

class File {
 public:
  // Throws Error("PATH: ...") for a missing, truncated or malformed file.
  static File open(const std::string& path);
  const std::string& path() const { return map_.path(); }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;  // nullptr when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MappedFile map_;
  // Tensors whose bytes the file does not align to their element size (the
  // header length is not a multiple of 8), copied: the kernels read weights in place.
  std::vector<std::unique_ptr<uint8_t[]>> aligned_copies_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards named
// by model.safetensors.index.json ("weight_map": {tensor: shard file}). Throws
// Error naming the directory or the file when neither exists, a shard is
// missing, or a tensor of the index is absent from its shard.
class Checkpoint {
 public:
  static Checkpoint open_directory(const std::string& dir);
  const TensorView* find(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::vector<std::string>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<File>> shards_;
  std::map<std::string, const TensorView*> index_;
  std::vector<std::string> files_;
};

// Writes tensors (dtype F32, F16, BF16, I32 or I64) to PATH via PATH.tmp + rename.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};
void write_file(const std::string& path, const std::vector<TensorToWrite>& tensors,
                const std::map<std::string, std::string>& metadata = {});

}  // namespace podkv::safetensors
