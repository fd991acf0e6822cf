// Runs the items of a task under several KV policies and records, per (item,
// policy), the quality numbers and the KV bytes the cache really held.
//
// How each policy sees the input (token selection happens at the end of the
// first forward call, so the prompt must be one call):
//   grid items   the prompt in one forward call (the prefill), then greedy
//                decoding one token per call; KV bytes are read after the prefill.
//   window items the first `prefill` tokens in one call, then the rest in calls
//                of `decode_chunk` tokens. Scored: the predictions of tokens
//                prefill .. context-1 (logits of positions prefill-1 .. context-2),
//                against the next token and, for agreement, against a dense
//                cache run through the same calls (lockstep, so no logits are
//                stored). KV bytes are read once all `context` tokens are in.
#pragma once

#include "backend/backend.h"

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/scoring.h"
#include "eval/tasks.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace podkv::eval {

// A cache with room for one sequence that grows to `length` tokens through
// forward calls cut into chunks of at most `chunk` tokens.
using CacheFactory = std::function<std::unique_ptr<KvCache>(const KvLayout& layout, int64_t length, int64_t chunk)>;

// The default factory: peak pages of one sequence (the whole length counted as prefill).
std::unique_ptr<KvCache> default_cache(const KvLayout& layout, int64_t length, int64_t chunk);

struct EvalPolicy {
  std::string label;              // unique in a run, as given in --kv ("pod:group=2")
  KvLayout layout;
  std::optional<float> tau;       // PoD skipping threshold
  nlohmann::json options;         // every setting of the policy (results.json; --resume matches on it)
  CacheFactory make_cache;        // empty = default_cache
  // The policy's own weights (--kv ...:model=DIR), of the run's shape, and the
  // backend holding them; null = the run's model and RunSettings::backend.
  const Model* model = nullptr;
  Backend* backend = nullptr;
};

// What one policy did on one item.
struct ItemRecord {
  int item = 0;
  std::string policy;             // label
  std::string options;            // the policy's options as compact JSON
  int64_t prompt_tokens = 0;
  int64_t kv_length = 0;          // tokens in the cache when the KV bytes were read
  int64_t kv_bytes = 0;           // pages the cache held for the sequence × page bytes
  int64_t kv_bytes_in_use = 0;    // the layout's analytic count
  double seconds = 0;             // forward calls of this policy
  // Window items.
  WindowScore score;
  bool has_reference = false;
  // Grid items.
  bool correct = false;
  std::string generated;
};

nlohmann::json to_json(const ItemRecord& r);
ItemRecord record_from_json(const nlohmann::json& j);

struct RunSettings {
  int64_t chunk = 256;  // longest chunk a forward call is cut into (the prefill's)
  Backend* backend = nullptr;  // where every forward runs (eval --device); null: a CPU backend per runner
};

// Work of the whole run in token-forward units, for progress.
using ProgressFn = std::function<void(int64_t work_done, int64_t work_total)>;
using RecordFn = std::function<void(const ItemRecord&)>;

// Greedy answer tokens a grid item may generate.
int max_new_tokens(const TaskItem& item, const TaskSettings& s, const Tokenizer& tok, int64_t model_context);

// One grid item under one policy.
ItemRecord run_grid_item(const Model& model, const Tokenizer& tok, const EvalPolicy& policy, const TaskItem& item,
                         const TaskSettings& s, const RunSettings& run);

// One window item under `policies` in lockstep (with a dense reference when
// `with_reference`); `on_step(tokens)` is called as tokens are run.
std::vector<ItemRecord> run_window_item(const Model& model, const std::vector<const EvalPolicy*>& policies,
                                        const TaskItem& item, const TaskSettings& s, const RunSettings& run,
                                        bool with_reference, const std::function<void(int64_t)>& on_step = {});

// Every (item, policy) not in `done` (keys: item index, policy label, options),
// in item order; `on_record` gets each record as it is finished.
using DoneSet = std::set<std::tuple<int, std::string, std::string>>;
void run_eval(const Model& model, const Tokenizer& tok, const TaskSettings& s, const RunSettings& run,
              const std::vector<EvalPolicy>& policies, const std::vector<TaskItem>& items, const DoneSet& done,
              const RecordFn& on_record, const ProgressFn& on_progress = {});

}  // namespace podkv::eval
