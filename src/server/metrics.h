// The server's counters and histograms, and their Prometheus text exposition
// (format 0.0.4). Thread-safe: HTTP threads count requests, the engine thread
// observes token latencies.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace podkv {

// Cumulative histogram with fixed upper bounds (seconds), as Prometheus wants it.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Lines NAME_bucket{le=...}, NAME_sum, NAME_count.
  void render(const std::string& name, std::string& out) const;
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // [bound] observations <= bound (not cumulative; summed when rendered)
  uint64_t count_ = 0;
  double sum_ = 0;
};

// What the engine holds at the moment of a scrape.
struct EngineGauges {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_bytes_in_use = 0;    // entries the layouts retain for the running sequences
  int64_t kv_bytes_reserved = 0;  // pages held
  int64_t kv_bytes_free = 0;      // free pages
  int64_t kv_bytes_budget = 0;
  int64_t dense_kv_bytes = 0;     // a dense cache of the same entry type for the same sequences
  int64_t steps = 0;
  int64_t preemptions = 0;        // running requests whose pages were taken back (recomputed later)
  int64_t max_running = 0;        // most sequences that ran at once
};

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& endpoint, int status);
  void add_tokens(int64_t prompt, int64_t generated);
  void observe_time_to_first_token(double seconds);
  void observe_inter_token_latency(double seconds);
  // The whole exposition, with the engine's gauges.
  std::string render(const EngineGauges& gauges) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  Histogram ttft_, itl_;
};

}  // namespace podkv
