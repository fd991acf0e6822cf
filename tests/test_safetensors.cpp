// safetensors reading and writing: round trips of every dtype, malformed
// headers built by hand, a fuzz pass (every truncation, byte flips), and
// sharded checkpoint directories.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "io/safetensors.h"
#include "util/error.h"

namespace st = podkv::safetensors;
namespace fs = std::filesystem;
using podkv::DType;

namespace {

// A directory unique to the running test and process, removed afterwards.
struct TempDir {
  fs::path dir;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path() /
          ("podkv_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TempDir() { fs::remove_all(dir); }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(size));
}

// A file of an 8-byte length, the JSON `header` as given, then `data_bytes` bytes.
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> bytes(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  return bytes;
}

// Opens `bytes` and returns the error message ("" when it opened).
std::string open_error(const TempDir& tmp, const std::vector<uint8_t>& bytes) {
  const std::string path = tmp.file("raw.safetensors");
  write_bytes(path, bytes, bytes.size());
  try {
    st::File::open(path);
  } catch (const podkv::Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    return message;
  }
  return "";
}

struct Sample {
  std::vector<float> f32 = {1, 2, 3, -4, 5.5f, 6};
  std::vector<uint16_t> f16 = {0x3c00, 0x4000, 0xc200, 0x0000};
  std::vector<uint16_t> bf16 = {0x3f80, 0x4000, 0xbf00, 0x7f80};
  std::vector<int32_t> i32 = {-1, 0, 2147483647};
  std::vector<int64_t> i64 = {int64_t{1} << 40, -7};
  float scalar = 42;

  std::vector<st::TensorToWrite> tensors() const {
    return {{"model.embed.weight", DType::F32, {2, 3}, f32.data(), 24},
            {"h.f16", DType::F16, {4}, f16.data(), 8},
            {"h.bf16", DType::BF16, {2, 2}, bf16.data(), 8},
            {"ids", DType::I32, {3}, i32.data(), 12},
            {"positions", DType::I64, {2, 1}, i64.data(), 16},
            {"empty", DType::F32, {0, 5}, nullptr, 0},
            {"scalar", DType::F32, {}, &scalar, 4}};
  }
};

}  // namespace

TEST(Safetensors, RoundTripsEveryDtype) {
  TempDir tmp;
  const Sample s;
  const std::string path = tmp.file("model.safetensors");
  st::write_file(path, s.tensors(), {{"format", "pt"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const std::vector<uint8_t> bytes = read_file_bytes(path);
  uint64_t header_bytes;
  std::memcpy(&header_bytes, bytes.data(), 8);
  EXPECT_EQ(header_bytes % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + header_bytes + 24 + 8 + 8 + 12 + 16 + 4);

  const st::File f = st::File::open(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), 7u);
  const st::TensorView* e = f.find("model.embed.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->dtype, DType::F32);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(e->elements(), 6);
  EXPECT_EQ(e->file, path);
  EXPECT_EQ(std::memcmp(e->data, s.f32.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.find("h.f16")->data, s.f16.data(), 8), 0);
  EXPECT_EQ(f.find("h.bf16")->dtype, DType::BF16);
  EXPECT_EQ(std::memcmp(f.find("h.bf16")->data, s.bf16.data(), 8), 0);
  EXPECT_EQ(f.find("ids")->dtype, DType::I32);
  EXPECT_EQ(std::memcmp(f.find("ids")->data, s.i32.data(), 12), 0);
  EXPECT_EQ(f.find("positions")->dtype, DType::I64);
  EXPECT_EQ(f.find("positions")->shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(std::memcmp(f.find("positions")->data, s.i64.data(), 16), 0);
  EXPECT_EQ(f.find("empty")->nbytes, 0u);
  EXPECT_EQ(f.find("empty")->elements(), 0);
  EXPECT_EQ(f.find("scalar")->elements(), 1);
  EXPECT_EQ(*reinterpret_cast<const float*>(f.find("scalar")->data), 42.0f);
  EXPECT_EQ(f.find("missing"), nullptr);

  float out[4];
  podkv::to_f32(DType::F16, f.find("h.f16")->data, out, 4);
  EXPECT_EQ(out[2], -3.0f);
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir tmp;
  const float x[4] = {};
  const std::string path = tmp.file("bad.safetensors");
  EXPECT_THROW(st::write_file(path, {{"a", DType::Q8_0, {32}, x, 34}}), podkv::Error);
  EXPECT_THROW(st::write_file(path, {{"a", DType::F32, {2}, x, 4}}), podkv::Error);
  EXPECT_THROW(st::write_file(path, {{"a", DType::F32, {1}, x, 4}, {"a", DType::F32, {1}, x, 4}}), podkv::Error);
  EXPECT_THROW(st::write_file(path, {{"__metadata__", DType::F32, {1}, x, 4}}), podkv::Error);
  EXPECT_THROW(st::write_file(path, {{"a", DType::F32, {-1}, x, 4}}), podkv::Error);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_THROW(st::write_file(tmp.file("no/such/dir.safetensors"), {}), podkv::Error);
}

TEST(Safetensors, RejectsMalformedFiles) {
  TempDir tmp;
  auto one = [&](const std::string& entry, size_t data_bytes) {
    return open_error(tmp, raw_file("{\"w\":" + entry + "}", data_bytes));
  };
  EXPECT_EQ(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8), "");
  EXPECT_NE(open_error(tmp, {1, 2, 3}).find("shorter than"), std::string::npos);
  std::vector<uint8_t> long_header = raw_file("{}", 0);
  long_header[0] = 3;
  EXPECT_NE(open_error(tmp, long_header).find("runs past the end"), std::string::npos);
  EXPECT_NE(open_error(tmp, raw_file("{\"w\":", 0)).find("not valid JSON"), std::string::npos);
  EXPECT_NE(open_error(tmp, raw_file("[1,2]", 0)).find("not a JSON object"), std::string::npos);
  EXPECT_NE(open_error(tmp, raw_file(R"({"__metadata__":{"a":1}})", 0)).find("__metadata__ 'a'"), std::string::npos);
  EXPECT_NE(one(R"({"dtype":"F64","shape":[2],"data_offsets":[0,16]})", 16).find("tensor 'w': dtype F64 is not supported"),
            std::string::npos);
  EXPECT_NE(one(R"({"dtype":"BOOL","shape":[2],"data_offsets":[0,2]})", 2).find("dtype BOOL"), std::string::npos);
  EXPECT_NE(one(R"({"shape":[2],"data_offsets":[0,8]})", 8).find("'dtype'"), std::string::npos);
  EXPECT_NE(one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", 8).find("non-negative"), std::string::npos);
  EXPECT_NE(one(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})", 8).find("non-negative"), std::string::npos);
  EXPECT_NE(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})", 8).find("data_offsets"), std::string::npos);
  EXPECT_NE(one(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})", 8).find("end before"), std::string::npos);
  EXPECT_NE(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 7).find("past its end (7 bytes)"),
            std::string::npos);
  EXPECT_NE(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", 8).find("needs 12"), std::string::npos);
  EXPECT_NE(one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})", 8).find("too many"),
            std::string::npos);
  EXPECT_NE(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]})", 8).find("past its end"),
            std::string::npos);
  EXPECT_NE(open_error(tmp, raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}})",
                                     8))
                .find("tensor 'b' overlaps tensor 'a'"),
            std::string::npos);
}

TEST(Safetensors, FuzzTruncationAndByteFlips) {
  TempDir tmp;
  const Sample s;
  const std::string good_path = tmp.file("good.safetensors"), path = tmp.file("fuzz.safetensors");
  st::write_file(good_path, s.tensors(), {{"format", "pt"}});
  const std::vector<uint8_t> good = read_file_bytes(good_path);
  uint64_t header_end;
  std::memcpy(&header_end, good.data(), 8);
  header_end += 8;
  // The data is packed with no padding, so every truncation cuts a tensor.
  for (size_t length = 0; length < good.size(); ++length) {
    write_bytes(path, good, length);
    ASSERT_THROW(st::File::open(path), podkv::Error) << "length " << length;
  }
  auto try_open = [&](const std::vector<uint8_t>& bytes) {
    write_bytes(path, bytes, bytes.size());
    try {
      const st::File f = st::File::open(path);
      uint64_t sum = 0;  // touch every tensor byte: they must be inside the map
      for (const auto& [name, t] : f.tensors())
        for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
      (void)sum;
    } catch (const podkv::Error&) {
    }
  };
  std::vector<uint8_t> bytes = good;
  for (size_t i = 0; i < header_end; ++i) {
    for (uint8_t flip : {0x01, 0x80}) {
      bytes[i] ^= flip;
      try_open(bytes);
      bytes[i] ^= flip;
    }
  }
  std::mt19937 rng(3);
  for (int round = 0; round < 500; ++round) {
    bytes = good;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) bytes[rng() % header_end] = static_cast<uint8_t>("0123456789,:[]{}\" e-"[rng() % 20]);
    try_open(bytes);
  }
}

TEST(Safetensors, CheckpointSingleFile) {
  TempDir tmp;
  const Sample s;
  EXPECT_THROW(st::Checkpoint::open_directory(tmp.dir.string()), podkv::Error);
  st::write_file(tmp.file("model.safetensors"), s.tensors());
  const st::Checkpoint c = st::Checkpoint::open_directory(tmp.dir.string());
  EXPECT_EQ(c.files(), std::vector<std::string>{tmp.file("model.safetensors")});
  EXPECT_EQ(c.names().size(), 7u);
  ASSERT_NE(c.find("ids"), nullptr);
  EXPECT_EQ(c.find("ids")->shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(c.find("nope"), nullptr);
}

TEST(Safetensors, CheckpointShards) {
  TempDir tmp;
  const Sample s;
  const auto all = s.tensors();
  st::write_file(tmp.file("model-00001-of-00002.safetensors"), {all[0], all[1]});
  st::write_file(tmp.file("model-00002-of-00002.safetensors"), {all[2], all[3]});
  auto write_index = [&](const std::string& json) {
    std::ofstream(tmp.file("model.safetensors.index.json")) << json;
  };
  write_index(R"({"metadata":{"total_size":52},"weight_map":{)"
              R"("model.embed.weight":"model-00001-of-00002.safetensors","h.f16":"model-00001-of-00002.safetensors",)"
              R"("h.bf16":"model-00002-of-00002.safetensors","ids":"model-00002-of-00002.safetensors"}})");
  const st::Checkpoint c = st::Checkpoint::open_directory(tmp.dir.string());
  EXPECT_EQ(c.files().size(), 2u);
  EXPECT_EQ(c.names(), (std::vector<std::string>{"h.bf16", "h.f16", "ids", "model.embed.weight"}));
  EXPECT_EQ(c.find("ids")->file, tmp.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(std::memcmp(c.find("model.embed.weight")->data, s.f32.data(), 24), 0);

  auto error_of = [&](const std::string& json) {
    write_index(json);
    try {
      st::Checkpoint::open_directory(tmp.dir.string());
    } catch (const podkv::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of(R"({"weight_map":{"ids":"model-00003-of-00002.safetensors"}})").find("cannot open"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"weight_map":{"x":"model-00001-of-00002.safetensors"}})").find("tensor 'x'"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"weight_map":{"x":"../model.safetensors"}})").find("not a file in the directory"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"weight_map":{"x":3}})").find("not a file name"), std::string::npos);
  EXPECT_NE(error_of(R"({"metadata":{}})").find("weight_map"), std::string::npos);
  EXPECT_NE(error_of("{").find("not valid JSON"), std::string::npos);
}
