// What lets podkv eval --resume continue an interrupted run: DIR/settings.json
// (the settings that decide the items) and DIR/progress.jsonl (one finished
// (item, policy) record per line, flushed as each finishes). A resumed run
// must have the same settings; it skips the records already there (matched by
// item, policy label and the policy's options), so policies may be added.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/runner.h"

namespace podkv::eval {

class Checkpoint {
 public:
  // Fresh run: creates DIR, writes settings.json and an empty progress.jsonl.
  // Resume: checks settings.json against `settings` (Error naming the first
  // setting that differs) and reads the records; a last line cut short by an
  // interruption is dropped.
  Checkpoint(const std::string& dir, const nlohmann::json& settings, bool resume);
  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::vector<ItemRecord>& records() const { return records_; }
  DoneSet done() const;
  // Appends a record to progress.jsonl (flushed) and to records().
  void add(const ItemRecord& r);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::vector<ItemRecord> records_;
};

}  // namespace podkv::eval
