#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <limits>

#include "util/error.h"
#include "util/int_math.h"

static_assert(std::endian::native == std::endian::little,
              "GGUF files are read in place: a little-endian host is assumed");

namespace podkv::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS

const char* value_type_name(ValueType t) {
  static const char* const kNames[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32",
                                       "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY",
                                       "UINT64", "INT64", "FLOAT64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

// Bytes of one scalar of type `t`; 0 for STRING and ARRAY.
size_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
    case ValueType::UINT16: case ValueType::INT16: return 2;
    case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
    case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
    case ValueType::STRING: case ValueType::ARRAY: return 0;
  }
  return 0;
}

bool is_unsigned(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 ||
         t == ValueType::UINT64;
}
bool is_signed(ValueType t) {
  return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 ||
         t == ValueType::INT64;
}
bool is_float(ValueType t) { return t == ValueType::FLOAT32 || t == ValueType::FLOAT64; }

// Names of the ggml types podkv does not read, so the error says what the file holds.
std::string ggml_type_name(uint32_t t) {
  static const std::pair<uint32_t, const char*> kNames[] = {
      {0, "F32"}, {1, "F16"}, {2, "Q4_0"}, {3, "Q4_1"}, {6, "Q5_0"}, {7, "Q5_1"},
      {8, "Q8_0"}, {9, "Q8_1"}, {10, "Q2_K"}, {11, "Q3_K"}, {12, "Q4_K"}, {13, "Q5_K"},
      {14, "Q6_K"}, {15, "Q8_K"}, {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"},
      {19, "IQ1_S"}, {20, "IQ4_NL"}, {21, "IQ3_S"}, {22, "IQ2_S"}, {23, "IQ4_XS"},
      {24, "I8"}, {25, "I16"}, {26, "I32"}, {27, "I64"}, {28, "F64"}, {29, "IQ1_M"},
      {30, "BF16"}, {34, "TQ1_0"}, {35, "TQ2_0"}, {39, "MXFP4"}};
  for (const auto& [number, name] : kNames)
    if (number == t) return name;
  return "unknown";
}

// The ggml types podkv reads and the DType each maps to.
constexpr std::pair<TensorType, DType> kTypes[] = {
    {TensorType::F32, DType::F32},   {TensorType::F16, DType::F16},   {TensorType::BF16, DType::BF16},
    {TensorType::Q4_0, DType::Q4_0}, {TensorType::Q4_1, DType::Q4_1}, {TensorType::Q5_0, DType::Q5_0},
    {TensorType::Q5_1, DType::Q5_1}, {TensorType::Q8_0, DType::Q8_0}, {TensorType::Q2_K, DType::Q2_K},
    {TensorType::Q3_K, DType::Q3_K}, {TensorType::Q4_K, DType::Q4_K}, {TensorType::Q5_K, DType::Q5_K},
    {TensorType::Q6_K, DType::Q6_K}, {TensorType::IQ4_NL, DType::IQ4_NL}, {TensorType::IQ4_XS, DType::IQ4_XS},
    {TensorType::IQ2_XXS, DType::IQ2_XXS}, {TensorType::IQ2_XS, DType::IQ2_XS}, {TensorType::IQ2_S, DType::IQ2_S},
    {TensorType::IQ3_XXS, DType::IQ3_XXS}, {TensorType::IQ3_S, DType::IQ3_S}, {TensorType::IQ1_S, DType::IQ1_S},
    {TensorType::IQ1_M, DType::IQ1_M}};

bool is_supported(uint32_t t) {
  for (const auto& [type, dtype] : kTypes)
    if (static_cast<uint32_t>(type) == t) return true;
  return false;
}

// Bounds-checked reading of the header. `context` names what is being read
// ("metadata 'general.name'", "tensor 3") for the error message.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& context, const std::string& message) const {
    throw Error(path_ + ": " + context + ": " + message);
  }

  void need(uint64_t count, const std::string& context, const char* item) const {
    if (count > remaining())
      fail(context, std::string(item) + " needs " + std::to_string(count) + " bytes at byte " +
                        std::to_string(pos_) + ", past the end of the file (" +
                        std::to_string(size_) + " bytes)");
  }

  template <class T>
  T read(const std::string& context, const char* item) {
    need(sizeof(T), context, item);
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  std::string read_string(const std::string& context, const char* item) {
    const auto length = read<uint64_t>(context, item);
    need(length, context, item);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return s;
  }

  // A count of items, each at least `min_item_bytes` long: rejects counts the
  // rest of the file cannot hold before anything is allocated for them.
  uint64_t read_count(const std::string& context, const char* item, size_t min_item_bytes) {
    const auto count = read<uint64_t>(context, item);
    if (min_item_bytes > 0 && count > remaining() / min_item_bytes)
      fail(context, std::string(item) + " is " + std::to_string(count) + " but only " +
                        std::to_string(remaining()) + " bytes are left in the file");
    return count;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  const std::string& path_;
  size_t pos_ = 0;
};

// Reads one integer of type `t` as int64 (UINT64 values above INT64_MAX wrap,
// as they would in a C cast; scalar UINT64 keeps the full range in uint_value).
int64_t read_integer(Cursor& in, ValueType t, const std::string& context) {
  switch (t) {
    case ValueType::UINT8: return in.read<uint8_t>(context, "value");
    case ValueType::INT8: return in.read<int8_t>(context, "value");
    case ValueType::UINT16: return in.read<uint16_t>(context, "value");
    case ValueType::INT16: return in.read<int16_t>(context, "value");
    case ValueType::UINT32: return in.read<uint32_t>(context, "value");
    case ValueType::INT32: return in.read<int32_t>(context, "value");
    case ValueType::UINT64: return static_cast<int64_t>(in.read<uint64_t>(context, "value"));
    case ValueType::INT64: return in.read<int64_t>(context, "value");
    case ValueType::BOOL: {
      const auto b = in.read<uint8_t>(context, "value");
      if (b > 1) in.fail(context, "bool value is " + std::to_string(b) + " (must be 0 or 1)");
      return b;
    }
    default: in.fail(context, std::string("not an integer type: ") + value_type_name(t));
  }
}

double read_float(Cursor& in, ValueType t, const std::string& context) {
  if (t == ValueType::FLOAT32) return in.read<float>(context, "value");
  return in.read<double>(context, "value");
}

ValueType read_value_type(Cursor& in, const std::string& context, const char* item) {
  const auto t = in.read<uint32_t>(context, item);
  if (t > static_cast<uint32_t>(ValueType::FLOAT64))
    in.fail(context, std::string(item) + " " + std::to_string(t) + " is not a GGUF value type");
  return static_cast<ValueType>(t);
}

MetaValue read_value(Cursor& in, const std::string& context) {
  MetaValue v;
  v.type = read_value_type(in, context, "value type");
  if (is_unsigned(v.type) || v.type == ValueType::BOOL) {
    v.uint_value = v.type == ValueType::UINT64 ? in.read<uint64_t>(context, "value")
                                               : static_cast<uint64_t>(read_integer(in, v.type, context));
  } else if (is_signed(v.type)) {
    v.int_value = read_integer(in, v.type, context);
  } else if (is_float(v.type)) {
    v.float_value = read_float(in, v.type, context);
  } else if (v.type == ValueType::STRING) {
    v.string_value = in.read_string(context, "string");
  } else {  // ARRAY
    v.element_type = read_value_type(in, context, "array element type");
    if (v.element_type == ValueType::ARRAY) in.fail(context, "arrays of arrays are not supported");
    // A string item is at least its 8-byte length.
    const size_t min_bytes = v.element_type == ValueType::STRING ? 8 : scalar_size(v.element_type);
    const uint64_t count = in.read_count(context, "array length", min_bytes);
    if (v.element_type == ValueType::STRING) {
      v.strings.reserve(count);
      for (uint64_t i = 0; i < count; ++i) v.strings.push_back(in.read_string(context, "string"));
    } else if (is_float(v.element_type)) {
      v.floats.reserve(count);
      for (uint64_t i = 0; i < count; ++i) v.floats.push_back(read_float(in, v.element_type, context));
    } else {
      v.ints.reserve(count);
      for (uint64_t i = 0; i < count; ++i) v.ints.push_back(read_integer(in, v.element_type, context));
    }
  }
  return v;
}

std::string describe(const MetaValue& v) {
  if (v.type == ValueType::ARRAY) return std::string("an array of ") + value_type_name(v.element_type);
  return value_type_name(v.type);
}

bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// Elements of a tensor, or -1 when the shape is negative or the product overflows.
int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

}  // namespace

DType to_dtype(TensorType t) {
  for (const auto& [type, dtype] : kTypes)
    if (type == t) return dtype;
  throw Error("gguf: ggml type " + std::to_string(static_cast<uint32_t>(t)) + " is not supported");
}

TensorType from_dtype(DType t) {
  for (const auto& [type, dtype] : kTypes)
    if (dtype == t) return type;
  throw Error(std::string("gguf: dtype ") + dtype_name(t) + " has no GGUF tensor type in podkv");
}

File File::open(const std::string& path) {
  File f;
  f.map_ = MappedFile(path);
  Cursor in(f.map_.data(), f.map_.size(), path);
  const std::string header = "header";

  const auto magic = in.read<uint32_t>(header, "magic");
  if (magic != kMagic) throw Error(path + ": not a GGUF file (the first 4 bytes are not \"GGUF\")");
  f.version_ = in.read<uint32_t>(header, "version");
  if (f.version_ != 2 && f.version_ != 3) {
    const bool swapped = f.version_ == 0x02000000u || f.version_ == 0x03000000u;
    throw Error(path + ": GGUF version " + std::to_string(f.version_) + " is not supported (podkv reads 2 and 3)" +
                (swapped ? "; the file looks big-endian" : ""));
  }
  // Each tensor info is at least 24 bytes (name length, n_dims, type, offset);
  // each metadata pair at least 13 (key length, value type, one byte of value).
  const uint64_t tensor_count = in.read_count(header, "tensor count", 0);
  const uint64_t kv_count = in.read_count(header, "metadata count", 13);
  if (tensor_count > in.remaining() / 24)
    in.fail(header, "tensor count is " + std::to_string(tensor_count) + " but only " +
                        std::to_string(in.remaining()) + " bytes are left in the file");

  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key = in.read_string("metadata " + std::to_string(i), "key");
    const std::string context = "metadata '" + key + "'";
    MetaValue value = read_value(in, context);
    if (!f.metadata_.emplace(std::move(key), std::move(value)).second) in.fail(context, "key appears twice");
  }

  if (const MetaValue* a = f.find("general.alignment")) {
    const bool integer = is_unsigned(a->type) || (is_signed(a->type) && a->int_value > 0);
    const uint64_t alignment = is_unsigned(a->type) ? a->uint_value : static_cast<uint64_t>(a->int_value);
    if (!integer || !is_power_of_two(alignment) || alignment > (1u << 30))
      in.fail("metadata 'general.alignment'", "must be a power of two integer, got " + describe(*a) +
                                                  (integer ? " " + std::to_string(alignment) : ""));
    f.alignment_ = static_cast<uint32_t>(alignment);
  }

  f.tensors_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    TensorInfo t;
    t.name = in.read_string("tensor " + std::to_string(i), "name");
    const std::string context = "tensor '" + t.name + "'";
    const auto n_dims = in.read<uint32_t>(context, "number of dimensions");
    if (n_dims > kMaxDims)
      in.fail(context, "has " + std::to_string(n_dims) + " dimensions (at most " + std::to_string(kMaxDims) + ")");
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto dim = in.read<uint64_t>(context, "dimension");
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        in.fail(context, "dimension " + std::to_string(d) + " is " + std::to_string(dim));
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto type = in.read<uint32_t>(context, "type");
    if (!is_supported(type))
      in.fail(context, "ggml type " + std::to_string(type) + " (" + ggml_type_name(type) +
                           ") is not supported; podkv reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, "
                           "Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, "
                           "IQ3_S, IQ1_S and IQ1_M");
    t.type = static_cast<TensorType>(type);
    t.offset = in.read<uint64_t>(context, "offset");
    if (!f.tensor_index_.emplace(t.name, f.tensors_.size()).second) in.fail(context, "name appears twice");
    f.tensors_.push_back(std::move(t));
  }

  const uint64_t data_start = align_up(in.pos(), f.alignment_);
  const uint64_t file_size = f.map_.size();
  for (TensorInfo& t : f.tensors_) {
    const std::string context = "tensor '" + t.name + "'";
    const int64_t elements = element_count(t.shape);
    // 2^56 elements is far beyond any file; the bound keeps nbytes from overflowing.
    if (elements < 0 || elements > (int64_t{1} << 56)) in.fail(context, "shape has too many elements");
    const DType dtype = to_dtype(t.type);
    const int block = dtype_block_size(dtype);
    if (block > 1 && (t.shape.empty() || t.shape[0] % block != 0))
      in.fail(context, std::string(dtype_name(dtype)) + " needs a row length that is a multiple of " +
                           std::to_string(block) + ", got " +
                           (t.shape.empty() ? std::string("a scalar") : std::to_string(t.shape[0])));
    t.nbytes = dtype_bytes(to_dtype(t.type), static_cast<size_t>(elements));
    if (t.offset % f.alignment_ != 0)
      in.fail(context, "offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                           std::to_string(f.alignment_));
    uint64_t begin = 0, end = 0;
    if (__builtin_add_overflow(data_start, t.offset, &begin) || __builtin_add_overflow(begin, t.nbytes, &end))
      in.fail(context, "offset " + std::to_string(t.offset) + " is past the end of the file");
    if (end > file_size)
      in.fail(context, "data ends at byte " + std::to_string(end) + " past the end of the file (" +
                           std::to_string(file_size) + " bytes)");
    // The kernels read weights in place: an element must not straddle its alignment.
    // Block types (Q8_0, Q4_K, ...) are read bytewise: any alignment will do.
    const uint64_t element_bytes = block > 1 ? 1 : dtype_bytes(dtype, 1);
    if (begin % element_bytes != 0)
      in.fail(context, "data at byte " + std::to_string(begin) + " is not aligned to its " +
                           std::to_string(element_bytes) + "-byte elements (general.alignment " +
                           std::to_string(f.alignment_) + ")");
    t.data = f.map_.data() + begin;
  }

  // Tensors may not share bytes: sort by offset and compare neighbours.
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : f.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    const TensorInfo& next = *by_offset[i];
    if (next.offset < prev.offset + prev.nbytes && next.nbytes > 0 && prev.nbytes > 0)
      in.fail("tensor '" + next.name + "'", "data overlaps tensor '" + prev.name + "'");
  }
  return f;
}

const MetaValue* File::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const TensorInfo* File::tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::string File::get_string(const std::string& key) const {
  const MetaValue* v = find(key);
  check(v != nullptr, path() + ": metadata '" + key + "' is missing");
  check(v->type == ValueType::STRING, path() + ": metadata '" + key + "' is " + describe(*v) + ", expected a string");
  return v->string_value;
}

int64_t File::get_int(const std::string& key) const {
  const MetaValue* v = find(key);
  check(v != nullptr, path() + ": metadata '" + key + "' is missing");
  if (is_signed(v->type)) return v->int_value;
  check(is_unsigned(v->type), path() + ": metadata '" + key + "' is " + describe(*v) + ", expected an integer");
  check(v->uint_value <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
        path() + ": metadata '" + key + "' is " + std::to_string(v->uint_value) + ", too large");
  return static_cast<int64_t>(v->uint_value);
}

double File::get_float(const std::string& key) const {
  const MetaValue* v = find(key);
  check(v != nullptr, path() + ": metadata '" + key + "' is missing");
  if (is_float(v->type)) return v->float_value;
  if (is_unsigned(v->type)) return static_cast<double>(v->uint_value);
  check(is_signed(v->type), path() + ": metadata '" + key + "' is " + describe(*v) + ", expected a number");
  return static_cast<double>(v->int_value);
}

int64_t File::get_int_or(const std::string& key, int64_t fallback) const {
  return find(key) == nullptr ? fallback : get_int(key);
}

double File::get_float_or(const std::string& key, double fallback) const {
  return find(key) == nullptr ? fallback : get_float(key);
}

bool File::get_bool_or(const std::string& key, bool fallback) const {
  const MetaValue* v = find(key);
  if (v == nullptr) return fallback;
  check(v->type == ValueType::BOOL, path() + ": metadata '" + key + "' is " + describe(*v) + ", expected a bool");
  return v->uint_value != 0;
}

}  // namespace podkv::gguf
