// podkv's dequantizers of IQ4_NL and IQ4_XS (and Q4_K, a check of the harness) against llama.cpp's
// own Python reader: tests/fixtures/quant/iq4_reference.safetensors holds random blocks and the
// values gguf-py's quants.py gives them (scripts/fixtures/make_iq4_reference.py says how).
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "util/dtype.h"

namespace podkv {
namespace {

namespace fs = std::filesystem;

const fs::path kFixture = fs::path(PODKV_SOURCE_DIR) / "tests" / "fixtures" / "quant" / "iq4_reference.safetensors";

// Every block of `name` (I32 [n, block bytes], one byte a value) through to_f32, against the
// reference values (F32 [n, block values]) bit for bit: both compute fp16 scale x table value in float.
void expect_reference(const std::string& name, DType t) {
  const auto file = safetensors::File::open(kFixture.string());  // a missing fixture fails here
  const auto* blocks = file.find(name + ".blocks");
  const auto* values = file.find(name + ".values");
  ASSERT_NE(blocks, nullptr) << name;
  ASSERT_NE(values, nullptr) << name;
  ASSERT_EQ(blocks->dtype, DType::I32);
  ASSERT_EQ(values->dtype, DType::F32);
  ASSERT_EQ(blocks->shape.size(), 2u);
  const int64_t n = blocks->shape[0];
  ASSERT_EQ(blocks->shape[1], static_cast<int64_t>(dtype_block_bytes(t))) << name;
  ASSERT_EQ(values->shape, (std::vector<int64_t>{n, dtype_block_size(t)})) << name;
  std::vector<uint8_t> bytes(static_cast<size_t>(blocks->elements()));
  const auto* b32 = reinterpret_cast<const int32_t*>(blocks->data);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(b32[i]);
  std::vector<float> out(static_cast<size_t>(values->elements()));
  to_f32(t, bytes.data(), out.data(), out.size());
  const auto* want = reinterpret_cast<const float*>(values->data);
  int nonzero = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(out[i], want[i]) << name << " block " << i / dtype_block_size(t) << " value " << i % dtype_block_size(t);
    nonzero += want[i] != 0.0f;
  }
  EXPECT_GT(nonzero, static_cast<int>(out.size()) / 2) << name << ": the fixture's values are mostly zero";
}

TEST(QuantReference, Iq4NlMatchesGgufPy) { expect_reference("iq4_nl", DType::IQ4_NL); }
TEST(QuantReference, Iq4XsMatchesGgufPy) { expect_reference("iq4_xs", DType::IQ4_XS); }
TEST(QuantReference, Q4KMatchesGgufPy) { expect_reference("q4_k", DType::Q4_K); }

}  // namespace
}  // namespace podkv
