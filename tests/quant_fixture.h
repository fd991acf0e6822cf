// Fixtures of quantized blocks with reference values made outside podkv (tests/fixtures/quant/):
// NAME.blocks (I32 [n, block bytes], one byte a value, since podkv's safetensors reader takes no U8)
// and NAME.values (F32 [n, block values]) for each type NAME.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "util/dtype.h"

namespace podkv::quant_fixture {

inline std::filesystem::path path(const std::string& file) {
  return std::filesystem::path(PODKV_SOURCE_DIR) / "tests" / "fixtures" / "quant" / file;
}

// The bytes of `name`'s blocks of type t (bytes stays empty on a failed check).
inline void read_blocks(const safetensors::File& file, const std::string& name, DType t, std::vector<uint8_t>& bytes) {
  const auto* blocks = file.find(name + ".blocks");
  ASSERT_NE(blocks, nullptr) << name;
  ASSERT_EQ(blocks->dtype, DType::I32) << name;
  ASSERT_EQ(blocks->shape.size(), 2u) << name;
  ASSERT_EQ(blocks->shape[1], static_cast<int64_t>(dtype_block_bytes(t))) << name;
  bytes.resize(static_cast<size_t>(blocks->elements()));
  const auto* b32 = reinterpret_cast<const int32_t*>(blocks->data);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(b32[i]);
}

// Every block of `name` in `fixture` through to_f32, against the reference values bit for bit (both
// compute the same float operations); the values must be mostly nonzero and of both signs, so that
// the comparison means something. A missing fixture fails (safetensors::File::open throws).
inline void expect_reference_values(const std::string& fixture, const std::string& name, DType t) {
  const auto file = safetensors::File::open(path(fixture).string());
  std::vector<uint8_t> bytes;
  read_blocks(file, name, t, bytes);
  if (::testing::Test::HasFatalFailure()) return;
  const auto* values = file.find(name + ".values");
  ASSERT_NE(values, nullptr) << name;
  ASSERT_EQ(values->dtype, DType::F32) << name;
  const int64_t n = static_cast<int64_t>(bytes.size() / dtype_block_bytes(t));
  ASSERT_EQ(values->shape, (std::vector<int64_t>{n, dtype_block_size(t)})) << name;
  std::vector<float> out(static_cast<size_t>(values->elements()));
  to_f32(t, bytes.data(), out.data(), out.size());
  const auto* want = reinterpret_cast<const float*>(values->data);
  size_t nonzero = 0, negative = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(out[i], want[i]) << name << " block " << i / dtype_block_size(t) << " value " << i % dtype_block_size(t);
    nonzero += want[i] != 0.0f;
    negative += want[i] < 0.0f;
  }
  EXPECT_GT(nonzero, out.size() / 2) << name << ": the fixture's values are mostly zero";
  EXPECT_GT(negative, out.size() / 4) << name << ": the fixture has few negative values";
}

}  // namespace podkv::quant_fixture
