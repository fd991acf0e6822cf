#include "server/metrics.h"

#include <cstdio>

namespace podkv {

namespace {

std::string number(double v, int digits = 17) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void gauge(std::string& out, const char* name, const char* help, int64_t v) {
  header(out, name, "gauge", help);
  out += std::string(name) + " " + std::to_string(v) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size(), 0) {}

void Histogram::observe(double value) {
  for (size_t i = 0; i < bounds_.size(); ++i)
    if (value <= bounds_[i]) {
      ++counts_[i];
      break;
    }
  ++count_;
  sum_ += value;
}

void Histogram::render(const std::string& name, std::string& out) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i], 6) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::add_tokens(int64_t prompt, int64_t generated) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += prompt;
  generated_tokens_ += generated;
}

void Metrics::observe_time_to_first_token(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ttft_.observe(seconds);
}

void Metrics::observe_inter_token_latency(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  itl_.observe(seconds);
}

std::string Metrics::render(const EngineGauges& g) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  header(out, "podkv_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
  for (const auto& [key, count] : requests_)
    out += "podkv_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(count) + "\n";
  header(out, "podkv_prompt_tokens_total", "counter", "Prompt tokens of the requests that ran.");
  out += "podkv_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  header(out, "podkv_generation_tokens_total", "counter", "Tokens generated.");
  out += "podkv_generation_tokens_total " + std::to_string(generated_tokens_) + "\n";
  header(out, "podkv_time_to_first_token_seconds", "histogram", "From the request's arrival to its first token.");
  ttft_.render("podkv_time_to_first_token_seconds", out);
  header(out, "podkv_inter_token_latency_seconds", "histogram", "Between consecutive tokens of one request.");
  itl_.render("podkv_inter_token_latency_seconds", out);
  gauge(out, "podkv_sequences_running", "Sequences in the running batch.", g.running);
  gauge(out, "podkv_sequences_waiting", "Requests waiting for admission.", g.waiting);
  gauge(out, "podkv_kv_bytes_in_use", "KV entries the cache policy retains for the running sequences, in bytes.",
        g.kv_bytes_in_use);
  gauge(out, "podkv_kv_bytes_reserved", "KV pages held by the running sequences, in bytes.", g.kv_bytes_reserved);
  gauge(out, "podkv_kv_bytes_free", "Free KV pages, in bytes.", g.kv_bytes_free);
  gauge(out, "podkv_kv_bytes_budget", "The KV cache's whole budget, in bytes.", g.kv_bytes_budget);
  gauge(out, "podkv_kv_dense_equivalent_bytes",
        "Bytes a dense cache of the same entry type would hold for the running sequences.", g.dense_kv_bytes);
  header(out, "podkv_engine_steps_total", "counter", "Batch steps the engine ran.");
  out += "podkv_engine_steps_total " + std::to_string(g.steps) + "\n";
  header(out, "podkv_preemptions_total", "counter",
         "Running requests preempted for want of KV pages (pages freed, recomputed when admitted again).");
  out += "podkv_preemptions_total " + std::to_string(g.preemptions) + "\n";
  gauge(out, "podkv_sequences_running_max", "Most sequences that ran at once since the start.", g.max_running);
  return out;
}

}  // namespace podkv
