// The committed Hugging Face fixture models (tests/fixtures/models/NAME, made by
// scripts/fixtures/make_model_fixtures.py), for the tests that run each of them.
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

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

}  // namespace podkv::testutil
