#include "eval/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv::eval {

namespace fs = std::filesystem;

Checkpoint::Checkpoint(const std::string& dir, const nlohmann::json& settings, bool resume) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw Error("--out: cannot create the directory " + dir);
  const fs::path settings_path = fs::path(dir) / "settings.json";
  path_ = (fs::path(dir) / "progress.jsonl").string();
  if (resume) {
    if (!fs::exists(settings_path))
      throw Error("--resume: " + settings_path.string() + " not found: there is no run in " + dir + " to resume");
    const std::string text = read_file_bounded(settings_path.string(), kMaxSmallJsonBytes, "--resume");
    nlohmann::json before;
    try {
      before = nlohmann::json::parse(text);
    } catch (const std::exception&) {
      throw Error("--resume: " + settings_path.string() + " is not valid JSON");
    }
    if (!before.is_object()) throw Error("--resume: " + settings_path.string() + " is not a JSON object");
    // Both ways: a setting written only when it differs from its default (bos) is absent on one side.
    nlohmann::json keys = settings;
    keys.update(before);
    for (const auto& [key, unused] : keys.items()) {
      const nlohmann::json old = before.contains(key) ? before[key] : nlohmann::json();
      const nlohmann::json value = settings.contains(key) ? settings[key] : nlohmann::json();
      if (old != value)
        throw Error("--resume: the run in " + dir + " has " + key + " = " + old.dump() + ", this one " + value.dump() +
                    " (give the same settings, or drop --resume to start over)");
    }
    std::ifstream progress(path_);
    std::string line;
    int64_t line_number = 0;
    while (read_line_bounded(progress, line, kMaxJsonLineBytes, path_, line_number)) {
      if (line.empty()) continue;
      try {
        records_.push_back(record_from_json(nlohmann::json::parse(line)));
      } catch (const std::exception&) {
        // An interrupted write leaves a partial last line: that item runs again.
      }
    }
    // Rewrite the good records so that the file ends on a whole line.
    std::ofstream rewrite(path_, std::ios::trunc);
    for (const ItemRecord& r : records_) rewrite << to_json(r).dump() << "\n";
    if (!rewrite.good()) throw Error(path_ + ": cannot write");
  } else {
    std::ofstream out(settings_path, std::ios::trunc);
    out << settings.dump(1) << "\n";
    if (!out.good()) throw Error(settings_path.string() + ": cannot write");
    std::ofstream truncate(path_, std::ios::trunc);
    if (!truncate.good()) throw Error(path_ + ": cannot write");
  }
  file_ = std::fopen(path_.c_str(), "a");
  if (file_ == nullptr) throw Error(path_ + ": cannot open for appending");
}

Checkpoint::~Checkpoint() {
  if (file_ != nullptr) std::fclose(file_);
}

DoneSet Checkpoint::done() const {
  DoneSet done;
  for (const ItemRecord& r : records_) done.insert({r.item, r.policy, r.options});
  return done;
}

void Checkpoint::add(const ItemRecord& r) {
  const std::string line = to_json(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    throw Error(path_ + ": cannot write");
  records_.push_back(r);
}

}  // namespace podkv::eval
