// KV entry types stored for real: encoding and decoding of each type, the
// bytes a cache holds against the formula for every policy and type, and the
// logits of f16/bf16/q8_0 caches against the f32 cache on the trained
// reference model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "engine/runner.h"
#include "kv/kv_entry.h"
#include "kv_test_util.h"
#include "model/model.h"
#include "policy/policies.h"

namespace podkv {
namespace {

const std::string kEntryFixture = std::string(PODKV_SOURCE_DIR) + "/tests/fixtures/models/llama_gqa";
const std::string kEntryReference = std::string(PODKV_SOURCE_DIR) + "/models/podkv-ref";
const KvDType kTypes[] = {KvDType::F32, KvDType::F16, KvDType::BF16, KvDType::Q8_0};

TEST(KvEntry, SizesAndNames) {
  EXPECT_EQ(kv_entry_bytes(KvDType::F32, 128), 512u);
  EXPECT_EQ(kv_entry_bytes(KvDType::F16, 128), 256u);
  EXPECT_EQ(kv_entry_bytes(KvDType::BF16, 80), 160u);
  EXPECT_EQ(kv_entry_bytes(KvDType::Q8_0, 128), 4u * 34);  // llama.cpp's block_q8_0
  EXPECT_EQ(kv_entry_bytes(KvDType::Q8_0, 80), 2u * 34 + 2 + 16);  // a shorter last block
  for (KvDType t : kTypes) EXPECT_EQ(parse_kv_dtype(kv_dtype_name(t)), t);
  EXPECT_THROW(parse_kv_dtype("q4_0"), Error);
  EXPECT_EQ(default_kv_dtype(DType::F32), KvDType::F32);
  EXPECT_EQ(default_kv_dtype(DType::BF16), KvDType::BF16);
  EXPECT_EQ(default_kv_dtype(DType::F16), KvDType::F16);
  EXPECT_EQ(default_kv_dtype(DType::Q8_0), KvDType::F16);
}

TEST(KvEntry, RoundTripWithinEachTypesRounding) {
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  for (int d : {5, 16, 64, 80, 96, 128}) {
    std::vector<float> x(d), y(d);
    for (auto& v : x) v = 3.0f * normal(rng);
    x[0] = 0.0f;
    for (KvDType t : kTypes) {
      std::vector<uint8_t> entry(kv_entry_bytes(t, d));
      kv_encode(t, x.data(), d, entry.data());
      kv_decode(t, entry.data(), d, y.data());
      for (int i = 0; i < d; ++i) {
        const float err = std::fabs(y[i] - x[i]);
        if (t == KvDType::F32) {
          EXPECT_EQ(y[i], x[i]);
        }
        if (t == KvDType::F16) {
          EXPECT_LE(err, std::fabs(x[i]) * 0x1p-11f + 0x1p-24f) << d;
          EXPECT_EQ(y[i], f16_to_f32(f32_to_f16(x[i])));  // the vector path rounds as the scalar one
        }
        if (t == KvDType::BF16) {
          EXPECT_EQ(y[i], bf16_to_f32(f32_to_bf16(x[i])));
        }
        if (t == KvDType::Q8_0) {
          float amax = 0;  // of x's block
          for (int j = i / 32 * 32; j < std::min(d, i / 32 * 32 + 32); ++j) amax = std::max(amax, std::fabs(x[j]));
          EXPECT_LE(err, amax / 127.0f * 0.5f + amax * 0x1p-10f) << "d " << d << " i " << i;
        }
      }
    }
  }
}

TEST(KvEntry, Q8LayoutIsLlamaCpps) {
  // One block: an f16 scale = max|x| / 127, then 32 int8 values round(x / scale).
  std::vector<float> x(40);
  for (int i = 0; i < 40; ++i) x[i] = static_cast<float>(i - 20) * 0.5f;
  std::vector<uint8_t> e(kv_entry_bytes(KvDType::Q8_0, 40));
  kv_encode(KvDType::Q8_0, x.data(), 40, e.data());
  uint16_t s;
  std::memcpy(&s, e.data(), 2);
  EXPECT_EQ(s, f32_to_f16(10.0f / 127.0f));
  EXPECT_EQ(static_cast<int8_t>(e[2]), -127);  // x[0] = -10 = -amax
  EXPECT_EQ(static_cast<int8_t>(e[2 + 20]), 0);
  // The last block holds x[32..39] = 6 .. 9.5 with its own scale.
  std::memcpy(&s, e.data() + 34, 2);
  EXPECT_EQ(s, f32_to_f16(9.5f / 127.0f));
  EXPECT_EQ(static_cast<int8_t>(e[36 + 7]), 127);
}

// Bytes of the pages the cache holds (counted in its page tables; one token a
// page, so no page is partly used) == the formula, for every policy and entry
// type, after a chunked prefill and every step of a decode past the windows.
TEST(KvEntry, HeldBytesEqualTheFormulaForEveryPolicyAndType) {
  auto model = Model::load(kEntryFixture);
  const ModelConfig& c = model->config();
  for (const char* policy : {"dense", "pod", "streaming", "h2o", "snapkv", "cla", "pod+snapkv"}) {
    const KvLayout layout = testing::small_policy_layout(c, policy, 2, 8, 5, 4, 2);
    for (KvDType t : kTypes) {
      SCOPED_TRACE(std::string(policy) + " " + kv_dtype_name(t));
      KvCache cache(layout, size_t{1} << 20, 1, t);
      Runner runner(*model, cache);
      runner.set_chunk_size(7);
      const int seq = runner.add_sequence();
      std::vector<int32_t> prompt(30);
      for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(3 + i * 7 % 200);
      std::vector<float> logits;
      runner.forward(seq, prompt, false, logits);
      for (int step = 0; step < 12; ++step) {
        runner.forward(seq, {static_cast<int32_t>(5 + step)}, false, logits);
        EXPECT_EQ(cache.bytes_reserved(seq), cache.bytes_in_use(seq)) << "step " << step;
      }
      EXPECT_EQ(cache.bytes_in_use(seq),
                static_cast<size_t>(layout.retained_vectors(42, layout.selection == Selection::SnapKV ? 30 : -2)) *
                    kv_entry_bytes(t, c.head_dim));
    }
  }
}

// The quality cost of each entry type on the trained reference model: logits
// of every position of a 300-token text through a dense cache of each type,
// against the f32 cache.
TEST(KvEntry, LogitsAgainstTheF32CacheOnTheReferenceModel) {
  auto model = Model::load(kEntryReference);
  const ModelConfig& c = model->config();
  std::mt19937 rng(9);
  std::vector<int32_t> ids(300);
  for (auto& id : ids) id = static_cast<int32_t>(3 + rng() % 600);
  auto run = [&](KvDType t) {
    KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), size_t{16} << 20, 16, t);
    Runner runner(*model, cache);
    runner.set_chunk_size(64);
    std::vector<float> logits;
    runner.forward(runner.add_sequence(), ids, true, logits);
    return logits;
  };
  const std::vector<float> ref = run(KvDType::F32);
  for (KvDType t : {KvDType::F16, KvDType::BF16, KvDType::Q8_0}) {
    const std::vector<float> got = run(t);
    double max_diff = 0, max_ref = 0;
    int agree = 0;
    for (size_t row = 0; row < ids.size(); ++row) {
      const float* a = &got[row * c.vocab_size];
      const float* b = &ref[row * c.vocab_size];
      for (int v = 0; v < c.vocab_size; ++v) {
        max_diff = std::max(max_diff, static_cast<double>(std::fabs(a[v] - b[v])));
        max_ref = std::max(max_ref, static_cast<double>(std::fabs(b[v])));
      }
      agree += std::max_element(a, a + c.vocab_size) - a == std::max_element(b, b + c.vocab_size) - b;
    }
    const double top1 = static_cast<double>(agree) / static_cast<double>(ids.size());
    std::printf("kv %s: max relative logit error %.2e, top-1 agreement %.1f%%\n", kv_dtype_name(t), max_diff / max_ref,
                100.0 * top1);
    if (t == KvDType::Q8_0) {
      EXPECT_GE(top1, 0.95);
      EXPECT_LT(max_diff / max_ref, 0.1);
    } else {
      EXPECT_GE(top1, 0.99);
      EXPECT_LT(max_diff / max_ref, t == KvDType::F16 ? 0.01 : 0.05);
    }
  }
}

}  // namespace
}  // namespace podkv
