// The shipped reference model quantized by llama.cpp's llama-quantize (Q4_0,
// Q4_K_M, Q6_K; ../shared/data/models/quantized/): podkv's logits against the
// golden logits of an independent dequantize-then-forward reference in double
// precision (see ../shared/data/README.md). Prefill (the GEMM on panels
// dequantized tile by tile) and decode (the GEMV on blocks in place) both.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "kv/kv_cache.h"
#include "engine/runner.h"
#include "logit_compare.h"
#include "model/model.h"
#include "ops/matmul.h"

namespace podkv {
namespace {

namespace fs = std::filesystem;

const fs::path kQuantized = fs::path(PODKV_SOURCE_DIR) / ".." / "shared" / "data" / "models" / "quantized";

std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

using testutil::relative_error;

// LogitsMatchGolden checks the exact GEMV (x in float32); Int8LogitsNearGolden
// the default Int8 one (x quantized to int8 per block of 32).
class QuantizedModel : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { saved_ = quant_dot(); }
  void TearDown() override { set_quant_dot(saved_); }

  // The parameter's GGUF file and golden ids and logits (skips when ../shared lacks them).
  void load_golden() {
    gguf_path_ = kQuantized / ("podkv-ref-" + GetParam() + ".gguf");
    const fs::path golden_path = kQuantized / ("podkv-ref-" + GetParam() + ".golden.safetensors");
    if (!fs::exists(gguf_path_) || !fs::exists(golden_path)) GTEST_SKIP() << gguf_path_ << " is absent";
    golden_ = std::make_unique<safetensors::File>(safetensors::File::open(golden_path.string()));
    const auto* ids_t = golden_->find("input_ids");
    logits_t_ = golden_->find("logits");
    ASSERT_NE(ids_t, nullptr);
    ASSERT_NE(logits_t_, nullptr);
    ASSERT_EQ(ids_t->dtype, DType::I32);
    ids_.resize(static_cast<size_t>(ids_t->elements()));
    std::memcpy(ids_.data(), ids_t->data, ids_.size() * 4);
    expected_ = reinterpret_cast<const float*>(logits_t_->data);
  }

  QuantDot saved_ = QuantDot::Int8;
  fs::path gguf_path_;
  std::unique_ptr<safetensors::File> golden_;
  const safetensors::TensorView* logits_t_ = nullptr;
  std::vector<int32_t> ids_;
  const float* expected_ = nullptr;
};

TEST_P(QuantizedModel, LogitsMatchGolden) {
  set_quant_dot(QuantDot::Exact);
  load_golden();
  if (IsSkipped() || HasFatalFailure()) return;
  const std::vector<int32_t>& ids = ids_;
  const float* expected = expected_;

  auto model = Model::load(gguf_path_.string());
  const ModelConfig& c = model->config();
  ASSERT_EQ(logits_t_->shape, (std::vector<int64_t>{static_cast<int64_t>(ids.size()), c.vocab_size}));
  // The file really holds the quantized types (not a float fallback).
  std::map<std::string, int> types;
  for (const auto& t : model->gguf_file()->tensors()) ++types[dtype_name(gguf::to_dtype(t.type))];
  EXPECT_GT(types[GetParam() == "Q4_K_M" ? "Q4_K" : GetParam()], 0) << GetParam();

  const size_t cache_bytes = (ids.size() + 64) * c.dense_kv_bytes_per_token(4) * 2;
  {  // prefill in chunks: the GEMM path
    KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), cache_bytes, 16);
    Runner runner(*model, cache);
    runner.set_chunk_size(40);
    std::vector<float> logits;
    runner.forward(cache.add_sequence(), ids, true, logits);
    const double err = relative_error(logits.data(), expected, logits.size());
    RecordProperty("prefill_max_relative_error", sci(err));
    EXPECT_LT(err, 3e-6) << GetParam() << " prefill";
  }
  {  // one token at a time: the GEMV path
    KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), cache_bytes, 16);
    Runner runner(*model, cache);
    const int seq = cache.add_sequence();
    std::vector<float> logits;
    double worst = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      runner.forward(seq, {ids[t]}, false, logits);
      worst = std::max(worst, relative_error(logits.data(), expected + t * c.vocab_size, c.vocab_size));
    }
    RecordProperty("decode_max_relative_error", sci(worst));
    EXPECT_LT(worst, 3e-6) << GetParam() << " decode";
  }
}

size_t argmax(const float* v, size_t n) { return static_cast<size_t>(std::max_element(v, v + n) - v); }

// Decode one token at a time with the Int8 GEMV (Q4_0, Q8_0, Q4_K and Q6_K
// weights; the other types stay exact): each matmul's x is off by up to 1/254 of
// its block's max|x|, and these errors pass through every layer, so the bound is
// far looser than the exact path's 3e-6: max |Δ| / max |golden| < 5e-2 per
// position (measured 1.9e-2 for Q4_0, 3.4e-2 for Q4_K_M, 2.0e-2 for Q6_K), and
// the argmax (greedy next token) the same as the golden one at every position
// where the golden top two are more than 1e-2 · max|golden| apart.
TEST_P(QuantizedModel, Int8LogitsNearGolden) {
  set_quant_dot(QuantDot::Int8);
  load_golden();
  if (IsSkipped() || HasFatalFailure()) return;
  const std::vector<int32_t>& ids = ids_;
  const float* expected = expected_;
  auto model = Model::load(gguf_path_.string());
  const ModelConfig& c = model->config();
  const size_t vocab = static_cast<size_t>(c.vocab_size);
  const size_t cache_bytes = (ids.size() + 64) * c.dense_kv_bytes_per_token(4) * 2;
  KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), cache_bytes, 16);
  Runner runner(*model, cache);
  const int seq = cache.add_sequence();
  std::vector<float> logits;
  double worst = 0;
  int checked = 0, agree = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    runner.forward(seq, {ids[t]}, false, logits);
    const float* want = expected + t * vocab;
    worst = std::max(worst, relative_error(logits.data(), want, vocab));
    const size_t top = argmax(want, vocab);
    float second = -INFINITY, max_abs = 0;
    for (size_t v = 0; v < vocab; ++v) {
      if (v != top) second = std::max(second, want[v]);
      max_abs = std::max(max_abs, std::fabs(want[v]));
    }
    const size_t got = argmax(logits.data(), vocab);
    agree += got == top;
    if (want[top] - second > 1e-2f * max_abs) {
      ++checked;
      EXPECT_EQ(got, top) << GetParam() << " position " << t;
    }
  }
  RecordProperty("int8_decode_max_relative_error", sci(worst));
  std::printf("%s Int8 decode: max relative error %s, top-1 agrees at %d of %zu positions (%d checked)\n",
              GetParam().c_str(), sci(worst).c_str(), agree, ids.size(), checked);
  EXPECT_LT(worst, 5e-2) << GetParam() << " decode";
}

INSTANTIATE_TEST_SUITE_P(Golden, QuantizedModel, ::testing::Values("Q4_0", "Q4_K_M", "Q6_K"));

}  // namespace
}  // namespace podkv
