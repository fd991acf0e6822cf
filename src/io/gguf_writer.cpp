// Writing GGUF files (Writer), Q8_0 quantisation, and the MetaValue
// constructors used to build metadata. Reading is in gguf.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "io/gguf.h"
#include "util/error.h"
#include "util/int_math.h"

namespace podkv::gguf {
namespace {

constexpr uint32_t kDefaultAlignment = 32;

// Appends GGUF's little-endian encoding of values to a byte buffer.
class ByteWriter {
 public:
  explicit ByteWriter(std::vector<uint8_t>& out) : out_(out) {}
  template <class T>
  void put(T value) {
    append(&value, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    append(s.data(), s.size());
  }

 private:
  // resize + memcpy rather than insert(): g++ 12 -O3 warns falsely on the latter.
  void append(const void* bytes, size_t count) {
    const size_t at = out_.size();
    out_.resize(at + count);
    if (count > 0) std::memcpy(out_.data() + at, bytes, count);
  }

  std::vector<uint8_t>& out_;
};

// Writes an integer of type `t`, checking that it fits: a value that would be
// silently truncated is a bug in the caller.
void put_integer(ByteWriter& w, ValueType t, __int128 v, const std::string& key) {
  auto fits = [&](auto sample) {
    using T = decltype(sample);
    return v >= std::numeric_limits<T>::min() && v <= std::numeric_limits<T>::max();
  };
  bool ok = true;
  switch (t) {
    case ValueType::UINT8: ok = fits(uint8_t{}); if (ok) w.put<uint8_t>(static_cast<uint8_t>(v)); break;
    case ValueType::INT8: ok = fits(int8_t{}); if (ok) w.put<int8_t>(static_cast<int8_t>(v)); break;
    case ValueType::UINT16: ok = fits(uint16_t{}); if (ok) w.put<uint16_t>(static_cast<uint16_t>(v)); break;
    case ValueType::INT16: ok = fits(int16_t{}); if (ok) w.put<int16_t>(static_cast<int16_t>(v)); break;
    case ValueType::UINT32: ok = fits(uint32_t{}); if (ok) w.put<uint32_t>(static_cast<uint32_t>(v)); break;
    case ValueType::INT32: ok = fits(int32_t{}); if (ok) w.put<int32_t>(static_cast<int32_t>(v)); break;
    case ValueType::UINT64: ok = fits(uint64_t{}); if (ok) w.put<uint64_t>(static_cast<uint64_t>(v)); break;
    case ValueType::INT64: ok = fits(int64_t{}); if (ok) w.put<int64_t>(static_cast<int64_t>(v)); break;
    case ValueType::BOOL: ok = v == 0 || v == 1; if (ok) w.put<uint8_t>(static_cast<uint8_t>(v)); break;
    default: throw Error("gguf writer: metadata '" + key + "': value type " +
                         std::to_string(static_cast<uint32_t>(t)) + " is not an integer type");
  }
  check(ok, "gguf writer: metadata '" + key + "': value " + std::to_string(static_cast<int64_t>(v)) +
                " does not fit its type " + std::to_string(static_cast<uint32_t>(t)));
}

bool is_unsigned_or_bool(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 ||
         t == ValueType::UINT64 || t == ValueType::BOOL;
}

void put_float(ByteWriter& w, ValueType t, double v) {
  if (t == ValueType::FLOAT32) w.put<float>(static_cast<float>(v));
  else w.put<double>(v);
}

void put_value(ByteWriter& w, const MetaValue& v, const std::string& key) {
  w.put<uint32_t>(static_cast<uint32_t>(v.type));
  switch (v.type) {
    case ValueType::STRING: w.put_string(v.string_value); return;
    case ValueType::FLOAT32: case ValueType::FLOAT64: put_float(w, v.type, v.float_value); return;
    case ValueType::ARRAY: break;
    default:
      if (is_unsigned_or_bool(v.type)) put_integer(w, v.type, v.uint_value, key);
      else put_integer(w, v.type, v.int_value, key);
      return;
  }
  w.put<uint32_t>(static_cast<uint32_t>(v.element_type));
  switch (v.element_type) {
    case ValueType::ARRAY:
      throw Error("gguf writer: metadata '" + key + "': arrays of arrays are not supported");
    case ValueType::STRING:
      w.put<uint64_t>(v.strings.size());
      for (const std::string& s : v.strings) w.put_string(s);
      return;
    case ValueType::FLOAT32: case ValueType::FLOAT64:
      w.put<uint64_t>(v.floats.size());
      for (double x : v.floats) put_float(w, v.element_type, x);
      return;
    default:
      check(static_cast<uint32_t>(v.element_type) <= static_cast<uint32_t>(ValueType::FLOAT64),
            "gguf writer: metadata '" + key + "': unknown array element type");
      w.put<uint64_t>(v.ints.size());
      for (int64_t x : v.ints) put_integer(w, v.element_type, x, key);
      return;
  }
}

}  // namespace

MetaValue MetaValue::make_string(std::string s) {
  MetaValue v;
  v.type = ValueType::STRING;
  v.string_value = std::move(s);
  return v;
}
MetaValue MetaValue::make_uint32(uint32_t x) {
  MetaValue v;
  v.type = ValueType::UINT32;
  v.uint_value = x;
  return v;
}
MetaValue MetaValue::make_int32(int32_t x) {
  MetaValue v;
  v.type = ValueType::INT32;
  v.int_value = x;
  return v;
}
MetaValue MetaValue::make_float32(float x) {
  MetaValue v;
  v.type = ValueType::FLOAT32;
  v.float_value = x;
  return v;
}
MetaValue MetaValue::make_bool(bool x) {
  MetaValue v;
  v.type = ValueType::BOOL;
  v.uint_value = x ? 1 : 0;
  return v;
}
MetaValue MetaValue::make_strings(std::vector<std::string> items) {
  MetaValue v;
  v.type = ValueType::ARRAY;
  v.element_type = ValueType::STRING;
  v.strings = std::move(items);
  return v;
}
MetaValue MetaValue::make_int32s(std::vector<int64_t> items) {
  MetaValue v;
  v.type = ValueType::ARRAY;
  v.element_type = ValueType::INT32;
  v.ints = std::move(items);
  return v;
}
MetaValue MetaValue::make_float32s(std::vector<double> items) {
  MetaValue v;
  v.type = ValueType::ARRAY;
  v.element_type = ValueType::FLOAT32;
  v.floats = std::move(items);
  return v;
}

void Writer::set(const std::string& key, MetaValue value) {
  check(!key.empty(), "gguf writer: empty metadata key");
  for (auto& [existing, v] : metadata_) {
    if (existing == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

void Writer::add_tensor(const std::string& name, TensorType type, std::vector<int64_t> shape,
                        const void* data, size_t nbytes) {
  const std::string context = "gguf writer: tensor '" + name + "': ";
  check(!name.empty(), "gguf writer: empty tensor name");
  for (const PendingTensor& t : tensors_) check(t.name != name, context + "added twice");
  check(shape.size() <= 4, context + "has " + std::to_string(shape.size()) + " dimensions (at most 4)");
  size_t elements = 1;
  for (int64_t d : shape) {
    check(d >= 0, context + "negative dimension " + std::to_string(d));
    check(!__builtin_mul_overflow(elements, static_cast<size_t>(d), &elements), context + "shape overflows");
  }
  const DType dtype = to_dtype(type);
  if (const int block = dtype_block_size(dtype); block > 1)
    check(!shape.empty() && shape[0] % block == 0,
          context + dtype_name(dtype) + " needs a row length (shape[0]) that is a multiple of " + std::to_string(block));
  check(nbytes == dtype_bytes(dtype, elements),
        context + std::to_string(nbytes) + " bytes given, " + dtype_name(dtype) + " of this shape needs " +
            std::to_string(dtype_bytes(dtype, elements)));
  check(data != nullptr || nbytes == 0, context + "no data");
  const auto* bytes = static_cast<const uint8_t*>(data);
  tensors_.push_back({name, type, std::move(shape), std::vector<uint8_t>(bytes, bytes + nbytes)});
}

void Writer::write(const std::string& path) const {
  auto metadata = metadata_;
  uint64_t alignment = kDefaultAlignment;
  auto it = std::find_if(metadata.begin(), metadata.end(),
                         [](const auto& kv) { return kv.first == "general.alignment"; });
  if (it == metadata.end()) {
    metadata.emplace_back("general.alignment", MetaValue::make_uint32(kDefaultAlignment));
  } else {
    alignment = it->second.uint_value;
    check(it->second.type == ValueType::UINT32 && alignment != 0 && (alignment & (alignment - 1)) == 0,
          path + ": general.alignment must be a UINT32 power of two");
  }

  // Header: magic, version, counts, metadata, tensor infos; then the data
  // section, each tensor starting at a multiple of `alignment` within it.
  std::vector<uint8_t> header;
  ByteWriter w(header);
  w.put<uint32_t>(0x46554747);  // "GGUF"
  w.put<uint32_t>(3);
  w.put<uint64_t>(tensors_.size());
  w.put<uint64_t>(metadata.size());
  for (const auto& [key, value] : metadata) {
    w.put_string(key);
    put_value(w, value, key);
  }
  std::vector<uint64_t> offsets;
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    w.put_string(t.name);
    w.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (int64_t d : t.shape) w.put<uint64_t>(static_cast<uint64_t>(d));
    w.put<uint32_t>(static_cast<uint32_t>(t.type));
    w.put<uint64_t>(offset);
    offsets.push_back(offset);
    offset = align_up(offset + t.bytes.size(), alignment);
  }

  OutputFile out(path);
  out.write(header.data(), header.size());
  out.write_zeros(align_up(header.size(), alignment) - header.size());
  const uint64_t data_start = out.position();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    out.write_zeros(data_start + offsets[i] - out.position());
    out.write(tensors_[i].bytes.data(), tensors_[i].bytes.size());
  }
  out.write_zeros(align_up(out.position(), alignment) - out.position());
  out.commit();
}

void quantize_q8_0(const float* src, uint8_t* dst, size_t count) {
  check(count % kQ8BlockSize == 0,
        "quantize_q8_0: " + std::to_string(count) + " values is not a multiple of 32");
  for (size_t b = 0; b < count / kQ8BlockSize; ++b) {
    const float* x = src + b * kQ8BlockSize;
    float amax = 0;
    for (int i = 0; i < kQ8BlockSize; ++i) {
      check(std::isfinite(x[i]), "quantize_q8_0: value " + std::to_string(b * kQ8BlockSize + i) +
                                     " is not finite");
      amax = std::max(amax, std::fabs(x[i]));
    }
    // As ggml's quantize_row_q8_0_ref: multiply by 1/d (not divide), round half away from zero.
    const float d = amax / 127.0f;
    const float inverse = d != 0 ? 1.0f / d : 0.0f;
    uint8_t* block = dst + b * kQ8BlockBytes;
    const uint16_t d16 = f32_to_f16(d);
    std::memcpy(block, &d16, 2);
    for (int i = 0; i < kQ8BlockSize; ++i)
      block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[i] * inverse)));
  }
}

}  // namespace podkv::gguf
