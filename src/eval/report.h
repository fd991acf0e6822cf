// The report of podkv eval: results.json (every setting and number), a
// markdown table (method, KV bytes at the evaluated length and the saving vs
// dense, quality, time) and, for grid tasks, PNG heatmaps of accuracy over
// context length (x) × needle depth (y, 0% at the top), one panel per method.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/runner.h"
#include "eval/tasks.h"
#include "model/config.h"

namespace podkv::eval {

struct ReportInput {
  std::string model_path;
  ModelConfig config;
  TaskSettings settings;
  RunSettings run;
  const std::vector<EvalPolicy>* policies = nullptr;
  const std::vector<TaskItem>* items = nullptr;
  const std::vector<ItemRecord>* records = nullptr;  // records of other policies/options are ignored
};

// Bytes a dense cache (float32, 16-token pages) holds for one sequence of `length` tokens.
int64_t dense_cache_bytes(const ModelConfig& config, int64_t length);

// results.json: "task", "model", "settings", "scored", "policies" (per method:
// label, options, kv_length, kv_bytes, kv_bytes_in_use, dense_kv_bytes,
// kv_saving, seconds and the task's metrics; grid tasks add "grid" with
// lengths, depths and accuracy[depth][length]), "items" and "records".
nlohmann::json build_results(const ReportInput& in);

// The markdown report (a heading, what was run and scored, the table).
std::string markdown_table(const nlohmann::json& results);

// Writes DIR/results.json, DIR/table.md and, for grid tasks when PNG support
// is built in, DIR/<task>_heatmap.png. Returns the paths written.
std::vector<std::string> write_report(const std::string& dir, const nlohmann::json& results);

}  // namespace podkv::eval
