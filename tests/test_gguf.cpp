// GGUF reading and writing: round trips of every metadata type and tensor
// type, Q8_0 quantisation, malformed files built byte by byte, a fuzz pass
// (every truncation, byte flips), and the real files of ../shared/data.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <tuple>

#include "io/gguf.h"
#include "util/error.h"

namespace gguf = podkv::gguf;
namespace fs = std::filesystem;
using gguf::MetaValue;
using gguf::TensorType;
using gguf::ValueType;

namespace {

// A file path unique to the running test and process, removed afterwards.
struct TempPath {
  std::string path;
  explicit TempPath(const std::string& suffix = ".gguf") {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = (fs::temp_directory_path() / ("podkv_" + std::string(info->test_suite_name()) + "_" +
                                         info->name() + "_" + std::to_string(::getpid()) + suffix))
               .string();
  }
  ~TempPath() { fs::remove(path); }
};

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

// Builds GGUF bytes by hand, so tests can write what the Writer refuses to.
struct RawGguf {
  std::vector<uint8_t> bytes;
  RawGguf& append(const void* p, size_t n) {
    bytes.resize(bytes.size() + n);
    if (n > 0) std::memcpy(bytes.data() + bytes.size() - n, p, n);
    return *this;
  }
  template <class T>
  RawGguf& put(T v) {
    return append(&v, sizeof(T));
  }
  RawGguf& str(const std::string& s) { return put<uint64_t>(s.size()).append(s.data(), s.size()); }
  RawGguf& header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    return put<uint32_t>(0x46554747).put<uint32_t>(version).put<uint64_t>(tensors).put<uint64_t>(kvs);
  }
  RawGguf& tensor(const std::string& name, std::vector<uint64_t> shape, uint32_t type, uint64_t offset) {
    str(name).put<uint32_t>(static_cast<uint32_t>(shape.size()));
    for (uint64_t d : shape) put<uint64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  RawGguf& pad(size_t alignment = 32) {
    bytes.resize((bytes.size() + alignment - 1) / alignment * alignment, 0);
    return *this;
  }
  RawGguf& zeros(size_t n) {
    bytes.resize(bytes.size() + n, 0);
    return *this;
  }
};

// Opens `raw` and returns the error message ("" when it opened).
std::string open_error(const RawGguf& raw) {
  TempPath tmp;
  write_bytes(tmp.path, raw.bytes.data(), raw.bytes.size());
  try {
    gguf::File::open(tmp.path);
  } catch (const podkv::Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind(tmp.path + ": ", 0), 0u) << message;  // starts with the path
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    return message;
  }
  return "";
}

#define EXPECT_OPEN_ERROR(raw, part) EXPECT_NE(open_error(raw).find(part), std::string::npos) << open_error(raw)

std::vector<uint16_t> to_halves(const std::vector<float>& x, uint16_t (*convert)(float)) {
  std::vector<uint16_t> out;
  for (float v : x) out.push_back(convert(v));
  return out;
}

MetaValue scalar(ValueType t, uint64_t u, int64_t i = 0, double f = 0) {
  MetaValue v;
  v.type = t;
  v.uint_value = u;
  v.int_value = i;
  v.float_value = f;
  return v;
}

MetaValue array(ValueType element, std::vector<int64_t> ints) {
  MetaValue v = MetaValue::make_int32s(std::move(ints));
  v.element_type = element;
  return v;
}

// A small file with metadata and one tensor of each type, used by several tests.
gguf::Writer small_writer() {
  gguf::Writer w;
  w.set("general.architecture", MetaValue::make_string("llama"));
  w.set("llama.block_count", MetaValue::make_uint32(2));
  w.set("tokenizer.ggml.tokens", MetaValue::make_strings({"<unk>", "a", "bc"}));
  w.set("tokenizer.ggml.scores", MetaValue::make_float32s({0.0, -1.5, 2.25}));
  static const std::vector<float> f32 = {1, -2, 3.5f, 0.25f, 5, 6};
  w.add_tensor("a.f32", TensorType::F32, {3, 2}, f32.data(), 24);
  static const std::vector<uint16_t> f16 = to_halves({1, 2, 3, 4}, podkv::f32_to_f16);
  w.add_tensor("b.f16", TensorType::F16, {4}, f16.data(), 8);
  static const std::vector<uint16_t> bf16 = to_halves({-1, 0.5f}, podkv::f32_to_bf16);
  w.add_tensor("c.bf16", TensorType::BF16, {2}, bf16.data(), 4);
  std::vector<float> q(32);
  for (int i = 0; i < 32; ++i) q[i] = static_cast<float>(i) - 10;
  static std::vector<uint8_t> q8(34);
  gguf::quantize_q8_0(q.data(), q8.data(), 32);
  w.add_tensor("d.q8", TensorType::Q8_0, {32}, q8.data(), q8.size());
  return w;
}

}  // namespace

TEST(Gguf, RoundTripsEveryMetadataType) {
  TempPath tmp;
  gguf::Writer w;
  w.set("u8", scalar(ValueType::UINT8, 255));
  w.set("i8", scalar(ValueType::INT8, 0, -128));
  w.set("u16", scalar(ValueType::UINT16, 65535));
  w.set("i16", scalar(ValueType::INT16, 0, -32768));
  w.set("u32", MetaValue::make_uint32(4000000000u));
  w.set("i32", MetaValue::make_int32(-2000000000));
  w.set("u64", scalar(ValueType::UINT64, std::numeric_limits<uint64_t>::max()));
  w.set("i64", scalar(ValueType::INT64, 0, std::numeric_limits<int64_t>::min()));
  w.set("f32", MetaValue::make_float32(0.1f));
  w.set("f64", scalar(ValueType::FLOAT64, 0, 0, 0.1));
  w.set("yes", MetaValue::make_bool(true));
  w.set("no", MetaValue::make_bool(false));
  w.set("s", MetaValue::make_string(std::string("h\xc3\xa9llo\0x", 8)));
  w.set("empty", MetaValue::make_string(""));
  w.set("a.u8", array(ValueType::UINT8, {0, 255}));
  w.set("a.i8", array(ValueType::INT8, {-128, 127}));
  w.set("a.u16", array(ValueType::UINT16, {65535}));
  w.set("a.i16", array(ValueType::INT16, {-32768, 1}));
  w.set("a.u32", array(ValueType::UINT32, {4000000000}));
  w.set("a.i32", MetaValue::make_int32s({-1, 0, 2147483647}));
  w.set("a.u64", array(ValueType::UINT64, {1ll << 62}));
  w.set("a.i64", array(ValueType::INT64, {std::numeric_limits<int64_t>::min()}));
  w.set("a.bool", array(ValueType::BOOL, {1, 0, 1}));
  w.set("a.f32", MetaValue::make_float32s({0.5, -3}));
  MetaValue f64s = MetaValue::make_float32s({0.1, 1e300});
  f64s.element_type = ValueType::FLOAT64;
  w.set("a.f64", f64s);
  w.set("a.str", MetaValue::make_strings({"x", "", "yz"}));
  w.set("a.empty", MetaValue::make_strings({}));
  w.set("u32", MetaValue::make_uint32(7));  // set() replaces
  w.write(tmp.path);
  EXPECT_FALSE(fs::exists(tmp.path + ".tmp"));

  const gguf::File f = gguf::File::open(tmp.path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_int("general.alignment"), 32);
  EXPECT_EQ(f.metadata().size(), 28u);
  EXPECT_EQ(f.get_int("u8"), 255);
  EXPECT_EQ(f.get_int("i8"), -128);
  EXPECT_EQ(f.get_int("u16"), 65535);
  EXPECT_EQ(f.get_int("i16"), -32768);
  EXPECT_EQ(f.get_int("u32"), 7);
  EXPECT_EQ(f.get_int("i32"), -2000000000);
  EXPECT_EQ(f.find("u64")->uint_value, std::numeric_limits<uint64_t>::max());
  EXPECT_THROW(f.get_int("u64"), podkv::Error);  // does not fit int64
  EXPECT_EQ(f.get_int("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.get_float("f32"), static_cast<double>(0.1f));
  EXPECT_EQ(f.get_float("f64"), 0.1);
  EXPECT_EQ(f.get_float("u16"), 65535.0);
  EXPECT_TRUE(f.get_bool_or("yes", false));
  EXPECT_FALSE(f.get_bool_or("no", true));
  EXPECT_EQ(f.get_string("s"), std::string("h\xc3\xa9llo\0x", 8));
  EXPECT_EQ(f.get_string("empty"), "");
  const std::pair<const char*, std::vector<int64_t>> int_arrays[] = {
      {"a.u8", {0, 255}}, {"a.i8", {-128, 127}}, {"a.u16", {65535}}, {"a.i16", {-32768, 1}},
      {"a.u32", {4000000000}}, {"a.i32", {-1, 0, 2147483647}}, {"a.u64", {1ll << 62}},
      {"a.i64", {std::numeric_limits<int64_t>::min()}}, {"a.bool", {1, 0, 1}}};
  for (const auto& [key, values] : int_arrays) EXPECT_EQ(f.find(key)->ints, values) << key;
  EXPECT_EQ(f.find("a.bool")->element_type, ValueType::BOOL);
  EXPECT_EQ(f.find("a.f32")->floats, (std::vector<double>{0.5, -3}));
  EXPECT_EQ(f.find("a.f64")->floats, (std::vector<double>{0.1, 1e300}));
  EXPECT_EQ(f.find("a.str")->strings, (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(f.find("a.empty")->element_type, ValueType::STRING);
  EXPECT_TRUE(f.find("a.empty")->strings.empty());
  EXPECT_TRUE(f.tensors().empty());
}

TEST(Gguf, GettersNameFileAndKey) {
  TempPath tmp;
  small_writer().write(tmp.path);
  const gguf::File f = gguf::File::open(tmp.path);
  EXPECT_EQ(f.get_int_or("missing", -5), -5);
  EXPECT_EQ(f.get_float_or("missing", 2.5), 2.5);
  EXPECT_TRUE(f.get_bool_or("missing", true));
  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_EQ(f.tensor("missing"), nullptr);
  try {
    f.get_int("general.architecture");
    FAIL() << "no throw";
  } catch (const podkv::Error& e) {
    EXPECT_EQ(std::string(e.what()), tmp.path + ": metadata 'general.architecture' is STRING, expected an integer");
  }
  EXPECT_THROW(f.get_string("llama.block_count"), podkv::Error);
  EXPECT_THROW(f.get_string("missing"), podkv::Error);
  EXPECT_THROW(f.get_bool_or("llama.block_count", false), podkv::Error);
  EXPECT_THROW(f.get_float("tokenizer.ggml.scores"), podkv::Error);
}

TEST(Gguf, RoundTripsTensors) {
  TempPath tmp;
  small_writer().write(tmp.path);
  const gguf::File f = gguf::File::open(tmp.path);
  ASSERT_EQ(f.tensors().size(), 4u);
  const gguf::TensorInfo* a = f.tensor("a.f32");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(a->nbytes, 24u);
  float out[6];
  podkv::to_f32(gguf::to_dtype(a->type), a->data, out, 6);
  EXPECT_EQ(std::vector<float>(out, out + 6), (std::vector<float>{1, -2, 3.5f, 0.25f, 5, 6}));
  const gguf::TensorInfo* b = f.tensor("b.f16");
  EXPECT_EQ(b->type, TensorType::F16);
  podkv::to_f32(podkv::DType::F16, b->data, out, 4);
  EXPECT_EQ(std::vector<float>(out, out + 4), (std::vector<float>{1, 2, 3, 4}));
  const gguf::TensorInfo* c = f.tensor("c.bf16");
  EXPECT_EQ(c->type, TensorType::BF16);
  podkv::to_f32(podkv::DType::BF16, c->data, out, 2);
  EXPECT_EQ(out[0], -1.0f);
  EXPECT_EQ(out[1], 0.5f);
  const gguf::TensorInfo* d = f.tensor("d.q8");
  EXPECT_EQ(d->type, TensorType::Q8_0);
  EXPECT_EQ(d->nbytes, 34u);
  float q[32];
  podkv::to_f32(podkv::DType::Q8_0, d->data, q, 32);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(q[i], i - 10.0f, 21.0f / 127 / 2 + 0.02f) << i;
  for (const gguf::TensorInfo& t : f.tensors()) {
    EXPECT_EQ(t.offset % 32, 0u) << t.name;
    EXPECT_EQ((t.data - f.tensors()[0].data) % 32, 0) << t.name;
  }
}

TEST(Gguf, WriterHonoursAlignmentAndRejectsBadInput) {
  TempPath tmp;
  gguf::Writer w = small_writer();
  w.set("general.alignment", MetaValue::make_uint32(64));
  w.write(tmp.path);
  const gguf::File f = gguf::File::open(tmp.path);
  EXPECT_EQ(f.alignment(), 64u);
  for (const gguf::TensorInfo& t : f.tensors()) EXPECT_EQ(t.offset % 64, 0u) << t.name;

  const float x[32] = {};
  EXPECT_THROW(w.add_tensor("a.f32", TensorType::F32, {1}, x, 4), podkv::Error);  // duplicate
  EXPECT_THROW(w.add_tensor("e", TensorType::F32, {2}, x, 4), podkv::Error);      // wrong size
  EXPECT_THROW(w.add_tensor("e", TensorType::Q8_0, {16}, x, 17), podkv::Error);   // row not 32
  EXPECT_THROW(w.add_tensor("e", TensorType::F32, {1, 1, 1, 1, 1}, x, 4), podkv::Error);
  EXPECT_THROW(w.add_tensor("e", TensorType::F32, {-1}, x, 0), podkv::Error);
  gguf::Writer bad;
  bad.set("k", scalar(ValueType::UINT8, 300));
  EXPECT_THROW(bad.write(tmp.path + "2"), podkv::Error);
  EXPECT_FALSE(fs::exists(tmp.path + "2")) << "a failed write leaves no file";
  EXPECT_FALSE(fs::exists(tmp.path + "2.tmp"));
  gguf::Writer bad_alignment;
  bad_alignment.set("general.alignment", MetaValue::make_uint32(48));
  EXPECT_THROW(bad_alignment.write(tmp.path + "2"), podkv::Error);
  EXPECT_THROW(small_writer().write("/nonexistent-dir/x.gguf"), podkv::Error);
}

TEST(Gguf, QuantizeQ8_0StaysWithinHalfAStep) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0, 1);
  const size_t n = 32 * 64;
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = normal(rng) * static_cast<float>(1 + i / 32);  // a scale per block
  std::fill(x.begin() + 64, x.begin() + 96, 0.0f);                                      // an all-zero block
  std::vector<uint8_t> q(podkv::dtype_bytes(podkv::DType::Q8_0, n));
  gguf::quantize_q8_0(x.data(), q.data(), n);
  std::vector<float> y(n);
  podkv::to_f32(podkv::DType::Q8_0, q.data(), y.data(), n);
  for (size_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    // Half a step of d = amax/127, plus the fp16 rounding of d (2^-11 relative) times |q| <= 127.
    const float bound = amax / 127 / 2 + amax * std::ldexp(1.0f, -11) * 1.01f;
    for (int i = 0; i < 32; ++i) ASSERT_LE(std::fabs(x[b * 32 + i] - y[b * 32 + i]), bound) << b << " " << i;
  }
  for (int i = 64; i < 96; ++i) EXPECT_EQ(y[i], 0.0f);

  // Multiples of a power-of-two step come back exactly: amax 127 gives d = 1.
  std::vector<float> exact(32);
  for (int i = 0; i < 32; ++i) exact[i] = static_cast<float>(127 - 8 * i);
  gguf::quantize_q8_0(exact.data(), q.data(), 32);
  uint16_t d16;
  std::memcpy(&d16, q.data(), 2);
  EXPECT_EQ(d16, 0x3c00);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(static_cast<int8_t>(q[2 + i]), 127 - 8 * i);

  EXPECT_THROW(gguf::quantize_q8_0(x.data(), q.data(), 33), podkv::Error);
  x[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(gguf::quantize_q8_0(x.data(), q.data(), 32), podkv::Error);
}

TEST(Gguf, RejectsMalformedHeaders) {
  using R = RawGguf;
  EXPECT_OPEN_ERROR(R{}, "magic needs 4 bytes at byte 0, past the end of the file (0 bytes)");
  EXPECT_OPEN_ERROR(R{}.put<uint32_t>(0x46554746).put<uint32_t>(3).zeros(16), "not a GGUF file");
  EXPECT_OPEN_ERROR(R{}.header(0, 0, 1), "version 1");
  EXPECT_OPEN_ERROR(R{}.header(0, 0, 0x03000000), "big-endian");
  EXPECT_EQ(open_error(R{}.header(0, 0, 2)), "");  // v2 has the same layout
  EXPECT_EQ(open_error(R{}.header(0, 0)), "");
  // Counts the file cannot hold are refused before anything is allocated.
  EXPECT_OPEN_ERROR(R{}.header(0, 1ull << 60), "metadata count");
  EXPECT_OPEN_ERROR(R{}.header(1ull << 61, 0), "tensor count");
  EXPECT_OPEN_ERROR(R{}.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(1ull << 59),
                    "metadata 'k': array length");
  EXPECT_OPEN_ERROR(R{}.header(0, 1).str("k").put<uint32_t>(8).put<uint64_t>(~0ull), "metadata 'k': string");
  EXPECT_OPEN_ERROR(R{}.header(0, 1).put<uint64_t>(1ull << 62).zeros(16), "metadata 0: key");
  EXPECT_OPEN_ERROR(R{}.header(0, 1).str("k").put<uint32_t>(13).zeros(8), "value type 13");
  EXPECT_OPEN_ERROR(R{}.header(0, 1).str("k").put<uint32_t>(7).put<uint8_t>(2), "bool");
  EXPECT_OPEN_ERROR(R{}.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(0), "arrays of arrays");
  EXPECT_OPEN_ERROR(R{}.header(0, 2).str("k").put<uint32_t>(0).put<uint8_t>(1).str("k").put<uint32_t>(0).put<uint8_t>(1),
                    "metadata 'k': key appears twice");
  EXPECT_OPEN_ERROR(R{}.header(0, 1).str("general.alignment").put<uint32_t>(4).put<uint32_t>(48), "power of two");
}

TEST(Gguf, RejectsBadTensors) {
  auto one_tensor = [](std::vector<uint64_t> shape, uint32_t type, uint64_t offset, size_t data_bytes) {
    return RawGguf{}.header(1, 0).tensor("blk.0.attn_q.weight", std::move(shape), type, offset).pad().zeros(data_bytes);
  };
  EXPECT_EQ(open_error(one_tensor({4, 2}, 0, 0, 32)), "");
  EXPECT_EQ(open_error(one_tensor({}, 0, 0, 4)), "");  // a scalar
  EXPECT_OPEN_ERROR(one_tensor({4, 2}, 34, 0, 32), "tensor 'blk.0.attn_q.weight': ggml type 34 (TQ1_0) is not supported");
  EXPECT_OPEN_ERROR(one_tensor({4, 2}, 2, 0, 32), "Q4_0 needs a row length that is a multiple of 32, got 4");
  EXPECT_OPEN_ERROR(one_tensor({128}, 14, 0, 256), "Q6_K needs a row length that is a multiple of 256, got 128");
  EXPECT_OPEN_ERROR(one_tensor({128}, 23, 0, 136), "IQ4_XS needs a row length that is a multiple of 256, got 128");
  EXPECT_EQ(open_error(one_tensor({32, 2}, 20, 0, 64)), "");  // IQ4_NL: two blocks of 18 bytes
  // The grid i-quants: one super-block a row (IQ2_XXS 66, IQ2_XS 74, IQ3_XXS 98, IQ1_S 50, IQ3_S 110,
  // IQ2_S 82, IQ1_M 56 bytes), rows of 128 refused.
  for (const auto& [type, bytes, name] : {std::tuple{16u, 66u, "IQ2_XXS"}, std::tuple{17u, 74u, "IQ2_XS"},
                                          std::tuple{18u, 98u, "IQ3_XXS"}, std::tuple{19u, 50u, "IQ1_S"},
                                          std::tuple{21u, 110u, "IQ3_S"}, std::tuple{22u, 82u, "IQ2_S"},
                                          std::tuple{29u, 56u, "IQ1_M"}}) {
    EXPECT_EQ(open_error(one_tensor({256, 2}, type, 0, 2 * bytes)), "") << name;
    EXPECT_OPEN_ERROR(one_tensor({128}, type, 0, bytes),
                      std::string(name) + " needs a row length that is a multiple of 256, got 128");
  }
  EXPECT_OPEN_ERROR(one_tensor({4, 2}, 77, 0, 32), "ggml type 77");
  EXPECT_OPEN_ERROR(one_tensor({4, 2}, 0, 16, 64), "offset 16 is not a multiple of the alignment 32");
  EXPECT_OPEN_ERROR(one_tensor({4, 2}, 0, 0, 31),
                    "tensor 'blk.0.attn_q.weight': data ends at byte 128 past the end of the file (127 bytes)");
  EXPECT_OPEN_ERROR(one_tensor({4, 2}, 0, 1ull << 63, 32), "past the end of the file");
  EXPECT_OPEN_ERROR(one_tensor({~0ull}, 0, 0, 32), "dimension 0");
  EXPECT_OPEN_ERROR(one_tensor({1ull << 40, 1ull << 40}, 0, 0, 32), "too many elements");
  EXPECT_OPEN_ERROR(one_tensor({1, 1, 1, 1, 1}, 0, 0, 32), "5 dimensions");
  EXPECT_OPEN_ERROR(one_tensor({16}, 8, 0, 34), "multiple of 32");
  EXPECT_EQ(open_error(one_tensor({32}, 8, 0, 34)), "");
  EXPECT_OPEN_ERROR(RawGguf{}.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {8}, 0, 32).pad().zeros(64),
                    "tensor 'b': data overlaps tensor 'a'");
  EXPECT_OPEN_ERROR(RawGguf{}.header(2, 0).tensor("a", {8}, 0, 0).tensor("a", {8}, 0, 32).pad().zeros(64),
                    "tensor 'a': name appears twice");
}

// Every truncation of a valid file fails cleanly, except those that keep all
// tensor bytes (only trailing padding lost); flipped header bytes either fail
// cleanly or give a file whose tensors lie inside it.
TEST(Gguf, FuzzTruncationAndByteFlips) {
  TempPath tmp, fuzzed(".fuzz.gguf");
  small_writer().write(tmp.path);
  const std::vector<uint8_t> good = read_bytes(tmp.path);
  // The Writer pads the data section to 32 bytes at the end, so the data
  // starts at (file size - padded data size); the tensors end at `needed`.
  size_t data_start = 0, needed = 0;
  {
    const gguf::File f = gguf::File::open(tmp.path);
    uint64_t data_end = 0;
    for (const gguf::TensorInfo& t : f.tensors()) data_end = std::max<uint64_t>(data_end, t.offset + t.nbytes);
    data_start = good.size() - (data_end + 31) / 32 * 32;
    needed = data_start + data_end;
    ASSERT_EQ(data_start % 32, 0u);
  }
  for (size_t length = 0; length < good.size(); ++length) {
    write_bytes(fuzzed.path, good.data(), length);
    if (length < needed) {
      ASSERT_THROW(gguf::File::open(fuzzed.path), podkv::Error) << "length " << length;
    } else {
      ASSERT_NO_THROW(gguf::File::open(fuzzed.path)) << "length " << length;
    }
  }
  auto try_open = [&](const std::vector<uint8_t>& bytes) {
    write_bytes(fuzzed.path, bytes.data(), bytes.size());
    try {
      const gguf::File f = gguf::File::open(fuzzed.path);
      uint64_t sum = 0;  // touch every tensor byte: they must be inside the map
      for (const gguf::TensorInfo& t : f.tensors())
        for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
      (void)sum;
    } catch (const podkv::Error&) {
    }
  };
  std::vector<uint8_t> bytes = good;
  for (size_t i = 0; i < data_start; ++i) {
    for (uint8_t flip : {0x01, 0x80, 0xff}) {
      bytes[i] ^= flip;
      try_open(bytes);
      bytes[i] ^= flip;
    }
  }
  std::mt19937 rng(1);
  for (int round = 0; round < 500; ++round) {
    bytes = good;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) bytes[rng() % data_start] = static_cast<uint8_t>(rng());
    try_open(bytes);
  }
}

// Files written by llama.cpp's and ollama's tools.
namespace {
const std::string kData = PODKV_SOURCE_DIR "/../shared/data/";
}

TEST(GgufRealFiles, VocabFiles) {
  const std::string spm = kData + "gguf-vocab/ggml-vocab-llama-spm.gguf";
  if (!fs::exists(spm)) GTEST_SKIP() << spm << " is absent";
  const gguf::File f = gguf::File::open(spm);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  const auto& tokens = f.find("tokenizer.ggml.tokens")->strings;
  ASSERT_EQ(tokens.size(), 32000u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(f.find("tokenizer.ggml.scores")->floats.size(), 32000u);
  EXPECT_EQ(f.find("tokenizer.ggml.token_type")->ints.size(), 32000u);
  EXPECT_EQ(f.get_int("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_TRUE(f.tensors().empty());

  for (const char* name : {"gpt-2", "phi-3", "deepseek-llm"}) {
    const gguf::File v = gguf::File::open(kData + "gguf-vocab/ggml-vocab-" + name + ".gguf");
    const size_t n = v.find("tokenizer.ggml.tokens")->strings.size();
    EXPECT_GT(n, 30000u) << name;
    EXPECT_EQ(v.find("tokenizer.ggml.token_type")->ints.size(), n) << name;
  }
  const gguf::File gpt2 = gguf::File::open(kData + "gguf-vocab/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(gpt2.get_string("general.architecture"), "gpt2");
  EXPECT_EQ(gpt2.find("tokenizer.ggml.tokens")->strings.size(), 50257u);
  EXPECT_EQ(gpt2.find("tokenizer.ggml.merges")->strings.size(), 50000u);
}

TEST(GgufRealFiles, TinyLlamaShapesAndRewrite) {
  const std::string path = kData + "models/llama-2-tiny-random.gguf";
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent";
  const gguf::File f = gguf::File::open(path);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  const int64_t dim = f.get_int("llama.embedding_length");
  const int64_t ffn = f.get_int("llama.feed_forward_length");
  const int64_t layers = f.get_int("llama.block_count");
  const int64_t vocab = static_cast<int64_t>(f.find("tokenizer.ggml.tokens")->strings.size());
  EXPECT_EQ(dim, 8);
  EXPECT_EQ(layers, 1);
  EXPECT_EQ(vocab, 32000);
  EXPECT_EQ(f.tensor("token_embd.weight")->shape, (std::vector<int64_t>{dim, vocab}));
  EXPECT_EQ(f.tensor("output.weight")->shape, (std::vector<int64_t>{dim, vocab}));
  EXPECT_EQ(f.tensor("output_norm.weight")->shape, (std::vector<int64_t>{dim}));
  EXPECT_EQ(f.tensor("blk.0.ffn_up.weight")->shape, (std::vector<int64_t>{dim, ffn}));
  EXPECT_EQ(f.tensor("blk.0.ffn_down.weight")->shape, (std::vector<int64_t>{ffn, dim}));
  EXPECT_EQ(f.tensor("blk.0.attn_q.weight")->type, TensorType::F16);
  EXPECT_EQ(f.tensor("blk.0.attn_norm.weight")->type, TensorType::F32);

  // Rewrite it with our Writer and read it back: same metadata, same bytes.
  TempPath tmp;
  gguf::Writer w;
  for (const auto& [key, value] : f.metadata()) w.set(key, value);
  for (const gguf::TensorInfo& t : f.tensors()) {
    std::vector<float> values(t.nbytes / (t.type == TensorType::F32 ? 4 : 2));
    podkv::to_f32(gguf::to_dtype(t.type), t.data, values.data(), values.size());
    for (float v : values) ASSERT_TRUE(std::isfinite(v)) << t.name;
    w.add_tensor(t.name, t.type, t.shape, t.data, t.nbytes);
  }
  w.write(tmp.path);
  const gguf::File g = gguf::File::open(tmp.path);
  EXPECT_EQ(g.metadata().size(), f.metadata().size() + 1);  // + general.alignment
  EXPECT_EQ(g.find("tokenizer.ggml.tokens")->strings, f.find("tokenizer.ggml.tokens")->strings);
  EXPECT_EQ(g.find("tokenizer.ggml.scores")->floats, f.find("tokenizer.ggml.scores")->floats);
  ASSERT_EQ(g.tensors().size(), f.tensors().size());
  for (const gguf::TensorInfo& t : f.tensors()) {
    const gguf::TensorInfo* u = g.tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->shape, t.shape);
    ASSERT_EQ(u->nbytes, t.nbytes);
    EXPECT_EQ(std::memcmp(u->data, t.data, t.nbytes), 0) << t.name;
  }
}
