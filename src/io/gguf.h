// GGUF v3 files (ggml's self-describing weight format): reading, memory-mapped,
// and writing. Spec: github.com/ggml-org/ggml/blob/master/docs/gguf.md.
//
// Reading validates everything it touches (magic, version, counts against the
// file size, string lengths, tensor offsets and sizes against the data section)
// and throws podkv::Error naming the file and the key or tensor at fault.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "util/dtype.h"
#include "util/mapped_file.h"

namespace podkv::gguf {

// Value types of GGUF metadata, numbered as in the file.
enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5,
  FLOAT32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

// ggml tensor types that podkv reads and writes, numbered as in the file.
enum class TensorType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18,
  IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23, IQ1_M = 29, BF16 = 30,
};

DType to_dtype(TensorType t);
TensorType from_dtype(DType t);  // throws for integer dtypes

// One metadata value. Scalars use the field of their kind; arrays keep their
// element type in `element_type` and their items in exactly one of the vectors.
struct MetaValue {
  ValueType type = ValueType::UINT32;
  ValueType element_type = ValueType::UINT32;  // arrays only
  uint64_t uint_value = 0;     // UINT8..UINT64, BOOL (0/1)
  int64_t int_value = 0;       // INT8..INT64
  double float_value = 0;      // FLOAT32, FLOAT64
  std::string string_value;    // STRING
  std::vector<std::string> strings;  // ARRAY of STRING
  std::vector<int64_t> ints;         // ARRAY of any integer type or BOOL (UINT64 above INT64_MAX wraps)
  std::vector<double> floats;        // ARRAY of FLOAT32 / FLOAT64

  static MetaValue make_string(std::string s);
  static MetaValue make_uint32(uint32_t v);
  static MetaValue make_int32(int32_t v);
  static MetaValue make_float32(float v);
  static MetaValue make_bool(bool v);
  static MetaValue make_strings(std::vector<std::string> v);
  static MetaValue make_int32s(std::vector<int64_t> v);
  static MetaValue make_float32s(std::vector<double> v);
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // ggml order: shape[0] is the fastest-varying (row length)
  TensorType type = TensorType::F32;
  uint64_t offset = 0;         // from the start of the data section
  const uint8_t* data = nullptr;  // into the map
  size_t nbytes = 0;
};

class File {
 public:
  // Maps and parses `path`; throws Error("PATH: ...") on anything malformed.
  static File open(const std::string& path);

  const std::string& path() const { return map_.path(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::map<std::string, MetaValue>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  const MetaValue* find(const std::string& key) const;    // nullptr when absent
  const TensorInfo* tensor(const std::string& name) const;  // nullptr when absent

  // Typed getters: throw Error("PATH: metadata KEY ...") when absent or of the
  // wrong kind; the *_or forms return `fallback` when absent.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;  // any integer type
  double get_float(const std::string& key) const; // any float or integer type
  int64_t get_int_or(const std::string& key, int64_t fallback) const;
  double get_float_or(const std::string& key, double fallback) const;
  bool get_bool_or(const std::string& key, bool fallback) const;

 private:
  MappedFile map_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  std::map<std::string, MetaValue> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Builds a GGUF v3 file in memory order: metadata in insertion order, then
// tensors, each aligned to `general.alignment` (32). write() goes to PATH.tmp
// and renames, so a failed write never leaves a half-written file at PATH.
class Writer {
 public:
  void set(const std::string& key, MetaValue value);
  // `shape` in ggml order; `data` holds dtype_bytes(type, elements) bytes and is copied.
  void add_tensor(const std::string& name, TensorType type, std::vector<int64_t> shape,
                  const void* data, size_t nbytes);
  void write(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, MetaValue>> metadata_;
  struct PendingTensor {
    std::string name;
    TensorType type;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<PendingTensor> tensors_;
};

// Q8_0 quantisation of `count` floats (count % 32 == 0) into count/32*34 bytes,
// as ggml does it: d = max|x| / 127, q = round(x / d).
void quantize_q8_0(const float* src, uint8_t* dst, size_t count);

}  // namespace podkv::gguf
