// podkv's quantizers against llama.cpp's own output: the shipped reference model (models/podkv-ref),
// written as an F32 GGUF by podkv's exporter, was quantized by llama-quantize (Feb 2025, no
// importance matrix) into ../shared/data/models/quantized/podkv-ref-{Q4_0,Q4_K_M,Q6_K}.gguf. Each of
// their quantized tensors must equal, byte for byte, podkv's quantizer run on the same F32 rows
// (Q and K rows permuted as the exporter writes them), and each F32 tensor must equal podkv's; and
// `podkv convert --type q4_0 / q4_k_m / q6_k` must write the same tensors (names, types, bytes).
// IQ4_NL and IQ4_XS against hashes of llama.cpp's output (tests/fixtures/quantized/llamacpp_iq4.json,
// scripts/fixtures/make_llamacpp_iq4_hashes.sh): the export of the reference model and of the
// llama_gqa fixture (whose 128-value rows take the fallbacks) must write tensors of the same types and
// bytes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "convert/gguf_export.h"
#include "io/gguf.h"
#include "model/model.h"
#include "util/quant.h"

namespace podkv {
namespace {

namespace fs = std::filesystem;

const fs::path kLlamaCppQuantized = fs::path(PODKV_SOURCE_DIR) / ".." / "shared" / "data" / "models" / "quantized";
const fs::path kQuantizeReference = fs::path(PODKV_SOURCE_DIR) / "models" / "podkv-ref";

// podkv's quantizer of a GGUF block type; nullptr for a type this test does not compare.
using Quantizer = void (*)(const float*, uint8_t*, size_t);
Quantizer quantizer_of(gguf::TensorType t) {
  switch (gguf::to_dtype(t)) {
    case DType::Q4_0: return quant::quantize_q4_0;
    case DType::Q4_1: return quant::quantize_q4_1;
    case DType::Q5_0: return quant::quantize_q5_0;
    case DType::Q5_1: return quant::quantize_q5_1;
    case DType::Q8_0: return gguf::quantize_q8_0;
    case DType::Q4_K: return quant::quantize_q4_k;
    case DType::Q6_K: return quant::quantize_q6_k;
    default: return nullptr;
  }
}

// The reference model as an F32 GGUF, written once for the suite.
const gguf::File& f32_reference() {
  static const fs::path path =
      fs::temp_directory_path() / ("podkv_quantize_llamacpp_" + std::to_string(::getpid()) + ".gguf");
  static const gguf::File file = [] {
    auto model = Model::load(kQuantizeReference.string());
    GgufExportOptions opts;
    opts.type = GgufExportType::F32;
    export_gguf(*model, path.string(), opts);
    gguf::File f = gguf::File::open(path.string());
    fs::remove(path);  // the map stays valid
    return f;
  }();
  return file;
}

class LlamaQuantizeFile : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaQuantizeFile, EveryTensorEqualsPodkvsQuantizer) {
  const fs::path path = kLlamaCppQuantized / ("podkv-ref-" + GetParam() + ".gguf");
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent";
  ASSERT_TRUE(fs::exists(kQuantizeReference / "model.safetensors")) << kQuantizeReference << " (committed) is missing";
  const gguf::File theirs = gguf::File::open(path.string());
  const gguf::File& ours = f32_reference();
  int quantized = 0;
  for (const gguf::TensorInfo& t : theirs.tensors()) {
    const gguf::TensorInfo* source = ours.tensor(t.name);
    ASSERT_NE(source, nullptr) << t.name << " is not in podkv's export";
    ASSERT_EQ(source->type, gguf::TensorType::F32) << t.name;
    ASSERT_EQ(source->shape, t.shape) << t.name;
    if (t.type == gguf::TensorType::F32) {
      ASSERT_EQ(t.nbytes, source->nbytes) << t.name;
      EXPECT_EQ(std::memcmp(t.data, source->data, t.nbytes), 0) << t.name << ": F32 values differ";
      continue;
    }
    const Quantizer quantize = quantizer_of(t.type);
    ASSERT_NE(quantize, nullptr) << t.name << ": type " << dtype_name(gguf::to_dtype(t.type)) << " is not compared";
    const size_t count = source->nbytes / 4;
    std::vector<uint8_t> mine(t.nbytes);
    ASSERT_EQ(dtype_bytes(gguf::to_dtype(t.type), count), t.nbytes) << t.name;
    quantize(reinterpret_cast<const float*>(source->data), mine.data(), count);
    const size_t block = dtype_bytes(gguf::to_dtype(t.type), gguf::to_dtype(t.type) == DType::Q4_K || gguf::to_dtype(t.type) == DType::Q6_K ? 256 : 32);
    size_t differing = 0, first = t.nbytes;
    for (size_t b = 0; b < t.nbytes; b += block)
      if (std::memcmp(mine.data() + b, t.data + b, block) != 0) {
        ++differing;
        if (first == t.nbytes) first = b / block;
      }
    EXPECT_EQ(differing, 0u) << t.name << " (" << dtype_name(gguf::to_dtype(t.type)) << "): " << differing << " of "
                             << t.nbytes / block << " blocks differ, the first block " << first;
    ++quantized;
  }
  EXPECT_GT(quantized, 0) << path << " holds no quantized tensor";
}

// The export type that llama-quantize's file type of the parameter names.
GgufExportType export_type_of(const std::string& file_type) {
  return file_type == "Q4_0" ? GgufExportType::Q4_0 : file_type == "Q4_K_M" ? GgufExportType::Q4_K_M : GgufExportType::Q6_K;
}

TEST_P(LlamaQuantizeFile, ConvertWritesTheSameTensors) {
  const fs::path path = kLlamaCppQuantized / ("podkv-ref-" + GetParam() + ".gguf");
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent";
  ASSERT_TRUE(fs::exists(kQuantizeReference / "model.safetensors")) << kQuantizeReference << " (committed) is missing";
  const gguf::File theirs = gguf::File::open(path.string());
  const fs::path out =
      fs::temp_directory_path() / ("podkv_quantize_llamacpp_" + std::to_string(::getpid()) + "_" + GetParam() + ".gguf");
  GgufExportOptions opts;
  opts.type = export_type_of(GetParam());
  export_gguf(*Model::load(kQuantizeReference.string()), out.string(), opts);
  const gguf::File ours = gguf::File::open(out.string());
  fs::remove(out);
  EXPECT_EQ(ours.get_int("general.file_type"), theirs.get_int("general.file_type"));
  ASSERT_EQ(ours.tensors().size(), theirs.tensors().size());
  for (const gguf::TensorInfo& t : theirs.tensors()) {
    const gguf::TensorInfo* mine = ours.tensor(t.name);
    ASSERT_NE(mine, nullptr) << t.name;
    EXPECT_EQ(dtype_name(gguf::to_dtype(mine->type)), std::string(dtype_name(gguf::to_dtype(t.type)))) << t.name;
    EXPECT_EQ(mine->shape, t.shape) << t.name;
    EXPECT_TRUE(mine->nbytes == t.nbytes && std::memcmp(mine->data, t.data, t.nbytes) == 0) << t.name << ": bytes differ";
  }
}

INSTANTIATE_TEST_SUITE_P(Files, LlamaQuantizeFile, ::testing::Values("Q4_0", "Q4_K_M", "Q6_K"));

// FNV-1a, 64 bits, as the fixture's generator computes it.
std::string fnv1a64(const uint8_t* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ data[i]) * 0x100000001b3ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

TEST(LlamaQuantizeIq4, ExportWritesLlamaCppsTensors) {
  const fs::path fixture = fs::path(PODKV_SOURCE_DIR) / "tests" / "fixtures" / "quantized" / "llamacpp_iq4.json";
  const auto expected = nlohmann::json::parse(std::ifstream(fixture));
  ASSERT_EQ(expected["files"].size(), 4u);
  for (const auto& file : expected["files"]) {
    const std::string source = file["source"];
    const fs::path dir = source == "podkv-ref" ? kQuantizeReference : fs::path(PODKV_SOURCE_DIR) / "tests" / "fixtures" / "models" / source;
    const int file_type = file["file_type"];
    const fs::path out = fs::temp_directory_path() /
                         ("podkv_quantize_llamacpp_" + std::to_string(::getpid()) + "_" + source + std::to_string(file_type) + ".gguf");
    GgufExportOptions opts;
    opts.type = file_type == 25 ? GgufExportType::IQ4_NL : GgufExportType::IQ4_XS;
    export_gguf(*Model::load(dir.string()), out.string(), opts);
    const gguf::File ours = gguf::File::open(out.string());
    fs::remove(out);
    EXPECT_EQ(ours.get_int("general.file_type"), file_type) << source;
    ASSERT_EQ(ours.tensors().size(), file["tensors"].size()) << source;
    for (const auto& [name, want] : file["tensors"].items()) {
      const gguf::TensorInfo* mine = ours.tensor(name);
      ASSERT_NE(mine, nullptr) << source << " " << name;
      EXPECT_EQ(static_cast<int>(mine->type), want["type"].get<int>()) << source << " " << name;
      EXPECT_EQ(fnv1a64(mine->data, mine->nbytes), want["fnv1a64"].get<std::string>()) << source << " " << name << ": bytes differ";
    }
  }
}

}  // namespace
}  // namespace podkv
