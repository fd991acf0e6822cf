// podkv eval's JSONL input: progress.jsonl of an interrupted run, read back by
// --resume (one finished (item, policy) record per line; a bad line is
// dropped). Also record_from_json on each line alone, whose errors must be
// podkv::Error or nlohmann's, never a crash.
#include <nlohmann/json.hpp>

#include "eval/checkpoint.h"
#include "eval/runner.h"
#include "fuzz_util.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  podkv::fuzz::write_file("settings.json", std::string("{\"task\": \"passkey\"}\n"));
  podkv::fuzz::write_file("progress.jsonl", data, size);
  try {
    podkv::eval::Checkpoint resumed(podkv::fuzz::scratch_dir(), {{"task", "passkey"}}, true);
    resumed.done();
  } catch (const podkv::Error&) {
  }
  const std::string text(reinterpret_cast<const char*>(data), size);
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const nlohmann::json j = nlohmann::json::parse(text.substr(start, end - start), nullptr, false);
    if (!j.is_discarded()) {
      try {
        podkv::eval::record_from_json(j);
      } catch (const podkv::Error&) {
      } catch (const nlohmann::json::exception&) {
      }
    }
    start = end + 1;
  }
  return 0;
}
