// The committed Hugging Face fixture models (tests/fixtures/models/NAME, made by
// scripts/fixtures/make_model_fixtures.py), for the tests that run each of them.
#pragma once

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/runner.h"
#include "io/safetensors.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "util/error.h"

namespace podkv::testutil {

inline const std::filesystem::path kFixtureModels =
    std::filesystem::path(PODKV_SOURCE_DIR) / "tests" / "fixtures" / "models";

// The fixtures that have transformers' logits (reference.safetensors), sorted. Empty when the folder is
// missing: a parameterized suite over no names fails in gtest (an uninstantiated suite), so a lost
// fixture folder shows as a failure, not as a pass.
inline std::vector<std::string> fixture_model_names() {
  namespace fs = std::filesystem;
  std::vector<std::string> names;
  if (!fs::exists(kFixtureModels)) return names;
  for (const auto& e : fs::directory_iterator(kFixtureModels))
    if (fs::exists(e.path() / "reference.safetensors")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A fixture's input ids (reference.safetensors' I64 input_ids) as the engine takes them.
inline std::vector<int32_t> fixture_input_ids(const std::filesystem::path& dir) {
  auto ref = safetensors::File::open((dir / "reference.safetensors").string());
  const auto* t = ref.find("input_ids");
  if (t == nullptr || t->dtype != DType::I64) throw Error("no I64 input_ids in " + dir.string());
  std::vector<int64_t> ids64(static_cast<size_t>(t->elements()));
  std::memcpy(ids64.data(), t->data, ids64.size() * 8);
  return {ids64.begin(), ids64.end()};
}

// Logits [ids.size(), vocab] of one whole-prompt forward pass of `m` on the CPU, dense KV cache.
inline std::vector<float> prompt_logits(const Model& m, const std::vector<int32_t>& ids) {
  const ModelConfig& c = m.config();
  KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim),
                (ids.size() + 64) * static_cast<size_t>(c.dense_kv_bytes_per_token(4)) * 2, 16);
  Runner runner(m, cache);
  std::vector<float> logits;
  runner.forward(cache.add_sequence(), ids, true, logits);
  return logits;
}

}  // namespace podkv::testutil
