// podkv's dequantizers of llama.cpp's grid i-quants against ggml's own compiled ones:
// tests/fixtures/quant/iq_grid_reference.safetensors holds random blocks of each type and the floats
// ggml_get_type_traits(type)->to_float of a released libggml-base.so gives them
// (scripts/fixtures/make_iq_reference.sh). Bit for bit: both compute the same float operations.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "io/gguf.h"
#include "quant_fixture.h"
#include "ops/matmul.h"
#include "util/dtype.h"
#include "util/error.h"

namespace podkv {
namespace {

const char kGridFixture[] = "iq_grid_reference.safetensors";

void expect_matches_ggml(const std::string& name, DType t) { quant_fixture::expect_reference_values(kGridFixture, name, t); }

TEST(QuantIqGrids, Iq2XxsMatchesGgml) { expect_matches_ggml("iq2_xxs", DType::IQ2_XXS); }
TEST(QuantIqGrids, Iq3XxsMatchesGgml) { expect_matches_ggml("iq3_xxs", DType::IQ3_XXS); }
TEST(QuantIqGrids, Iq2XsMatchesGgml) { expect_matches_ggml("iq2_xs", DType::IQ2_XS); }
TEST(QuantIqGrids, Iq2SMatchesGgml) { expect_matches_ggml("iq2_s", DType::IQ2_S); }
TEST(QuantIqGrids, Iq3SMatchesGgml) { expect_matches_ggml("iq3_s", DType::IQ3_S); }
TEST(QuantIqGrids, Iq1SMatchesGgml) { expect_matches_ggml("iq1_s", DType::IQ1_S); }
TEST(QuantIqGrids, Iq1MMatchesGgml) { expect_matches_ggml("iq1_m", DType::IQ1_M); }

// ggml's type numbers map to these dtypes, and a tensor of them needs whole super-blocks per row.
TEST(QuantIqGrids, GgufTypeNumbersAndSizes) {
  for (const auto& [ggml, t, bytes] :
       {std::tuple{16u, DType::IQ2_XXS, 66u}, std::tuple{17u, DType::IQ2_XS, 74u}, std::tuple{18u, DType::IQ3_XXS, 98u},
        std::tuple{19u, DType::IQ1_S, 50u}, std::tuple{21u, DType::IQ3_S, 110u}, std::tuple{22u, DType::IQ2_S, 82u},
        std::tuple{29u, DType::IQ1_M, 56u}}) {
    EXPECT_EQ(gguf::to_dtype(static_cast<gguf::TensorType>(ggml)), t) << ggml;
    EXPECT_EQ(static_cast<uint32_t>(gguf::from_dtype(t)), ggml);
    EXPECT_EQ(dtype_block_size(t), 256) << dtype_name(t);
    EXPECT_EQ(dtype_block_bytes(t), bytes) << dtype_name(t);
    EXPECT_TRUE(dtype_is_quantized(t));
    std::vector<uint8_t> block(bytes);
    std::vector<float> out(256);
    EXPECT_THROW(to_f32(t, block.data(), out.data(), 128), Error) << dtype_name(t);
  }
}

// No int8 kernel exists for these types: in the default Int8 mode the GEMV must decline and take the
// exact path, giving the same floats as Exact mode (here on the fixture's blocks as a 24-row matrix).
TEST(QuantIqGrids, Int8ModeFallsBackToExactGemv) {
  const auto file = safetensors::File::open(quant_fixture::path(kGridFixture).string());
  for (const auto& [name, t] : {std::pair{"iq2_xxs", DType::IQ2_XXS}, std::pair{"iq1_m", DType::IQ1_M}}) {
    std::vector<uint8_t> bytes;
    quant_fixture::read_blocks(file, name, t, bytes);
    if (HasFatalFailure()) return;
    const WeightMatrix w{t, static_cast<int64_t>(bytes.size() / dtype_block_bytes(t)), 256, bytes.data()};
    std::vector<float> x(256), exact(static_cast<size_t>(w.rows)), int8(exact.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i % 7) - 3) * 0.25f;
    set_quant_dot(QuantDot::Exact);
    matmul(w, x.data(), 1, exact.data(), nullptr);
    set_quant_dot(QuantDot::Int8);
    matmul(w, x.data(), 1, int8.data(), nullptr);
    EXPECT_EQ(int8, exact) << name;
  }
}

}  // namespace
}  // namespace podkv
