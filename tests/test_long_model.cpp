// The shipped long-context model (models/podkv-long, trained by podkv on the
// GPU: docs/long-model) and its PoD-adapted twin (models/podkv-long-pod, with
// the pod.json of podkv analyze) load and retrieve a passkey hidden early in a
// prompt of the full context, through the same path as podkv eval: with the
// dense cache, and with the twin's PoD cache holding at least 25% fewer bytes;
// StreamingLLM with a 1024-token window, which drops the passkey, does not.
#include <gtest/gtest.h>

#include <filesystem>

#include "eval/runner.h"
#include "eval/tasks.h"
#include "kv/kv_layout.h"
#include "model/model.h"
#include "policy/kv_options.h"
#include "tokenizer/tokenizer.h"

namespace podkv {
namespace {

const std::filesystem::path kShippedModels = std::filesystem::path(PODKV_SOURCE_DIR) / "models";

eval::EvalPolicy policy(const std::string& name, const Model& model, const std::string& dir, int64_t recent) {
  KvOptions o;
  o.policy = name;
  o.sink = 16;
  o.recent = recent;
  eval::EvalPolicy p;
  p.label = name;
  p.layout = kv_layout_from_options(o, model.config(), dir);
  p.model = &model;
  return p;
}

TEST(LongModel, RetrievesAPasskeyAtTheFullContextWithDenseAndPod) {
  for (const char* name : {"podkv-long", "podkv-long-pod"})
    ASSERT_TRUE(std::filesystem::exists(kShippedModels / name / "model.safetensors")) << "the committed models/" << name
                                                                               << " is missing";
  const std::string base_dir = (kShippedModels / "podkv-long").string(), pod_dir = (kShippedModels / "podkv-long-pod").string();
  auto base = Model::load(base_dir);
  auto adapted = Model::load(pod_dir);
  ASSERT_EQ(base->config().max_position_embeddings, 4160);
  auto tok = load_tokenizer(base_dir);
  ASSERT_NE(tok, nullptr);

  // podkv eval --task passkey --lengths 4096 --depths 10: the passkey is 10%
  // into the haystack, about 3700 tokens before the question.
  eval::TaskSettings s;
  s.task = "passkey";
  s.lengths = {4096};
  s.depths = {10};
  s.samples = 1;
  s.seed = 0;
  const std::vector<eval::TaskItem> items = eval::build_items(s, *tok, tok->bos_id());
  ASSERT_EQ(items.size(), 1u);
  const eval::TaskItem& item = items[0];
  ASSERT_EQ(static_cast<int64_t>(item.tokens.size()), 4096);
  ASSERT_LT(item.needle_position, 500);

  eval::RunSettings run;
  run.chunk = 512;
  const eval::EvalPolicy dense = policy("dense", *base, base_dir, 256);
  const eval::EvalPolicy pod = policy("pod", *adapted, pod_dir, 128);  // the window of its pod.json wins
  const eval::EvalPolicy streaming = policy("streaming", *base, base_dir, 1008);
  ASSERT_EQ(pod.layout.policy, "pod");
  ASSERT_EQ(pod.layout.recent_tokens, 256) << "models/podkv-long-pod/pod.json was not read";
  // pod.json's anchors: layer 1 shares head 0's distant keys of layer 0, and keeps its own for head 1.
  EXPECT_EQ(pod.layout.key_rule(1, 0).distant_source, 0);
  EXPECT_EQ(pod.layout.key_rule(1, 1).retention, Retention::Full);

  const eval::ItemRecord d = eval::run_grid_item(*base, *tok, dense, item, s, run);
  EXPECT_TRUE(d.correct) << "dense answered '" << d.generated << "', the passkey is " << item.answer;
  const eval::ItemRecord p = eval::run_grid_item(*base, *tok, pod, item, s, run);
  EXPECT_TRUE(p.correct) << "PoD answered '" << p.generated << "', the passkey is " << item.answer;
  EXPECT_LE(static_cast<double>(p.kv_bytes), 0.75 * static_cast<double>(d.kv_bytes))
      << "PoD held " << p.kv_bytes << " KV bytes, dense " << d.kv_bytes;
  const eval::ItemRecord w = eval::run_grid_item(*base, *tok, streaming, item, s, run);
  EXPECT_FALSE(w.correct) << "StreamingLLM kept only 1024 tokens but answered the passkey";
  EXPECT_LE(w.kv_bytes * 3, d.kv_bytes);
}

}  // namespace
}  // namespace podkv
