#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "util/bounded_read.h"
#include "util/error.h"

static_assert(std::endian::native == std::endian::little,
              "safetensors files are read in place: a little-endian host is assumed");

namespace podkv::safetensors {
namespace {

using nlohmann::json;

// The reference implementation refuses headers above 100 MB; so do we, so a
// corrupt length cannot make the JSON parser chew through a huge file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

bool parse_dtype(const std::string& name, DType& out) {
  static const std::pair<const char*, DType> kTypes[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I32", DType::I32}, {"I64", DType::I64}};
  for (const auto& [n, t] : kTypes) {
    if (name == n) {
      out = t;
      return true;
    }
  }
  return false;
}

// Reads a non-negative JSON integer; `what` names it for the error message.
uint64_t get_unsigned(const json& j, const std::string& what) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer() && j.get<int64_t>() >= 0) return static_cast<uint64_t>(j.get<int64_t>());
  throw Error(what + " must be a non-negative integer, got " + j.dump());
}

TensorView parse_tensor(const std::string& path, const std::string& name, const json& entry,
                        const uint8_t* data_section, uint64_t data_bytes, uint64_t& begin_out) {
  const std::string context = path + ": tensor '" + name + "': ";
  check(entry.is_object(), context + "header entry is not an object");
  TensorView t;
  t.name = name;
  t.file = path;

  auto dtype = entry.find("dtype");
  check(dtype != entry.end() && dtype->is_string(), context + "missing string 'dtype'");
  check(parse_dtype(dtype->get<std::string>(), t.dtype),
        context + "dtype " + dtype->get<std::string>() + " is not supported (podkv reads F32, F16, BF16, I32, I64)");

  auto shape = entry.find("shape");
  check(shape != entry.end() && shape->is_array(), context + "missing array 'shape'");
  uint64_t elements = 1;
  for (const json& d : *shape) {
    const uint64_t dim = get_unsigned(d, context + "shape dimension");
    check(dim <= (uint64_t{1} << 56) && !__builtin_mul_overflow(elements, dim, &elements) &&
              elements <= (uint64_t{1} << 56),
          context + "shape " + shape->dump() + " has too many elements");
    t.shape.push_back(static_cast<int64_t>(dim));
  }

  auto offsets = entry.find("data_offsets");
  check(offsets != entry.end() && offsets->is_array() && offsets->size() == 2,
        context + "missing 'data_offsets' [begin, end]");
  const uint64_t begin = get_unsigned((*offsets)[0], context + "data_offsets[0]");
  const uint64_t end = get_unsigned((*offsets)[1], context + "data_offsets[1]");
  check(begin <= end, context + "data_offsets " + offsets->dump() + " end before they begin");
  check(end <= data_bytes, context + "data ends at byte " + std::to_string(end) +
                               " of the data section, past its end (" + std::to_string(data_bytes) + " bytes)");
  const uint64_t expected = dtype_bytes(t.dtype, elements);
  check(end - begin == expected, context + "data_offsets " + offsets->dump() + " hold " +
                                     std::to_string(end - begin) + " bytes, but " + dtype_name(t.dtype) +
                                     " of shape " + shape->dump() + " needs " + std::to_string(expected));
  t.data = data_section + begin;
  t.nbytes = static_cast<size_t>(end - begin);
  begin_out = begin;
  return t;
}

}  // namespace

int64_t TensorView::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

File File::open(const std::string& path) {
  File f;
  f.map_ = MappedFile(path);
  const uint64_t file_size = f.map_.size();
  check(file_size >= 8, path + ": not a safetensors file (" + std::to_string(file_size) +
                            " bytes, shorter than the 8-byte header length)");
  uint64_t header_bytes;
  std::memcpy(&header_bytes, f.map_.data(), 8);
  check(header_bytes <= file_size - 8, path + ": header length " + std::to_string(header_bytes) +
                                           " runs past the end of the file (" + std::to_string(file_size) +
                                           " bytes)");
  check(header_bytes <= kMaxHeaderBytes, path + ": header length " + std::to_string(header_bytes) +
                                             " is over the 100 MB limit");
  const auto* header_begin = reinterpret_cast<const char*>(f.map_.data() + 8);
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_bytes);
  } catch (const json::exception& e) {
    throw Error(path + ": header is not valid JSON: " + e.what());
  }
  check(header.is_object(), path + ": header is not a JSON object");

  const uint8_t* data_section = f.map_.data() + 8 + header_bytes;
  const uint64_t data_bytes = file_size - 8 - header_bytes;
  std::vector<std::pair<uint64_t, const TensorView*>> by_offset;  // (begin, tensor)
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      check(entry.is_object(), path + ": __metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        check(value.is_string(), path + ": __metadata__ '" + key + "' is not a string");
        f.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    uint64_t begin = 0;
    TensorView t = parse_tensor(path, name, entry, data_section, data_bytes, begin);
    if (reinterpret_cast<uintptr_t>(t.data) % dtype_bytes(t.dtype, 1) != 0) {
      // new[] of uint8_t aligns to __STDCPP_DEFAULT_NEW_ALIGNMENT__ (16), enough for every dtype here.
      f.aligned_copies_.push_back(std::make_unique<uint8_t[]>(t.nbytes));
      std::memcpy(f.aligned_copies_.back().get(), t.data, t.nbytes);
      t.data = f.aligned_copies_.back().get();
    }
    auto [it, inserted] = f.tensors_.emplace(name, std::move(t));
    check(inserted, path + ": tensor '" + name + "' appears twice");
    by_offset.emplace_back(begin, &it->second);
  }

  // Tensors may not share bytes (empty tensors share nothing).
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  uint64_t previous_end = 0;
  const TensorView* previous = nullptr;
  for (const auto& [begin, t] : by_offset) {
    if (t->nbytes == 0) continue;
    check(previous == nullptr || begin >= previous_end,
          path + ": tensor '" + t->name + "' overlaps tensor '" + (previous ? previous->name : "") + "'");
    previous_end = begin + t->nbytes;
    previous = t;
  }
  return f;
}

const TensorView* File::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Checkpoint Checkpoint::open_directory(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint c;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::is_regular_file(index_path, ec)) {
    // {"metadata": {...}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors", ...}}
    MappedFile index_file(index_path.string());
    check(index_file.size() <= kMaxIndexJsonBytes, index_path.string() + ": larger than " +
                                                       limit_string(kMaxIndexJsonBytes) + ", the limit for this input");
    const auto* text = reinterpret_cast<const char*>(index_file.data());
    json index;
    try {
      index = json::parse(text, text + index_file.size());
    } catch (const json::exception& e) {
      throw Error(index_path.string() + ": not valid JSON: " + e.what());
    }
    check(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
          index_path.string() + ": no \"weight_map\" object");
    std::map<std::string, File*> shard_by_name;
    for (const auto& [tensor, shard] : index["weight_map"].items()) {
      check(shard.is_string(), index_path.string() + ": weight_map entry '" + tensor + "' is not a file name");
      const std::string shard_name = shard.get<std::string>();
      // Shards live in the directory itself; a path out of it is a corrupt index.
      check(!shard_name.empty() && shard_name.find('/') == std::string::npos && shard_name != ".." &&
                shard_name != ".",
            index_path.string() + ": weight_map entry '" + tensor + "' names '" + shard_name +
                "', not a file in the directory");
      File*& file = shard_by_name[shard_name];
      if (file == nullptr) {
        const std::string shard_path = (fs::path(dir) / shard_name).string();
        c.shards_.push_back(std::make_unique<File>(File::open(shard_path)));
        c.files_.push_back(shard_path);
        file = c.shards_.back().get();
      }
      const TensorView* view = file->find(tensor);
      check(view != nullptr, file->path() + ": tensor '" + tensor + "' of " + index_path.string() + " is absent");
      c.index_[tensor] = view;
    }
    return c;
  }
  if (fs::is_regular_file(single, ec)) {
    c.shards_.push_back(std::make_unique<File>(File::open(single.string())));
    c.files_.push_back(single.string());
    for (const auto& [name, view] : c.shards_.back()->tensors()) c.index_[name] = &view;
    return c;
  }
  throw Error(dir + ": no model.safetensors or model.safetensors.index.json");
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, view] : index_) out.push_back(name);
  return out;
}

void write_file(const std::string& path, const std::vector<TensorToWrite>& tensors,
                const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    const std::string context = path + ": tensor '" + t.name + "': ";
    check(!t.name.empty() && t.name != "__metadata__", path + ": invalid tensor name '" + t.name + "'");
    check(names.insert(t.name).second, context + "written twice");
    check(t.dtype != DType::Q8_0, context + "Q8_0 has no safetensors dtype");
    size_t elements = 1;
    for (int64_t d : t.shape) {
      check(d >= 0, context + "negative dimension " + std::to_string(d));
      check(!__builtin_mul_overflow(elements, static_cast<size_t>(d), &elements), context + "shape overflows");
    }
    check(t.nbytes == dtype_bytes(t.dtype, elements),
          context + std::to_string(t.nbytes) + " bytes given, " + dtype_name(t.dtype) + " of this shape needs " +
              std::to_string(dtype_bytes(t.dtype, elements)));
    check(t.data != nullptr || t.nbytes == 0, context + "no data");
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  // Spaces pad the JSON to a multiple of 8 bytes so the data section starts 8-aligned.
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_bytes = text.size();

  OutputFile out(path);
  out.write(&header_bytes, 8);
  out.write(text.data(), text.size());
  for (const TensorToWrite& t : tensors) out.write(t.data, t.nbytes);
  out.commit();
}

}  // namespace podkv::safetensors
