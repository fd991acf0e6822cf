// Shared pieces of podkv_test_backend_ops: the options, the per-case report
// line, random inputs, and host <-> device copies of vectors.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "backend/backend_ops.h"

namespace podkv::backend_test {

struct Options {
  bool perf = false;
  std::string op;       // only this op ("" = all)
  std::string backend;  // only this backend ("" = all)
  int threads = 0;      // 0 = the default
};

// Prints one line per case and counts the failures.
class Reporter {
 public:
  explicit Reporter(const Options& options) : options_(options) {}
  bool wants(const std::string& op) const { return options_.op.empty() || options_.op == op; }
  // `err` is the case's max relative error, `tol` its bound; `note` says why a case failed when err is not enough.
  void result(const std::string& op, const std::string& shape, const std::string& backend, double err, double tol,
              const std::string& note = "") {
    const bool ok = err <= tol && note.empty();  // NaN fails
    ++cases_;
    if (!ok) ++failures_;
    std::printf("%-12s %-78s %-5s %9.2e  %s%s%s\n", op.c_str(), shape.c_str(), backend.c_str(), err,
                ok ? "OK" : "FAIL", note.empty() ? "" : "  ", note.c_str());
    std::fflush(stdout);
  }
  int cases() const { return cases_; }
  int failures() const { return failures_; }
  const Options& options() const { return options_; }

 private:
  const Options& options_;
  int cases_ = 0, failures_ = 0;
};

// max |a - ref| / max |ref| (a ref of all zeros: the absolute difference).
template <typename A, typename R>
double max_rel_err(const A* a, const R* ref, size_t n) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - static_cast<double>(ref[i]));
    diff = d > diff || d != d ? d : diff;
    scale = std::max(scale, std::abs(static_cast<double>(ref[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

inline std::vector<float> normal_floats(std::mt19937_64& rng, size_t n, float stddev = 1.0f) {
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

template <typename T>
DeviceBuffer to_device(BackendOps& ops, const std::vector<T>& host) {
  DeviceBuffer buf(ops, host.size() * sizeof(T));
  buf.upload(host.data(), host.size() * sizeof(T));
  return buf;
}

template <typename T>
std::vector<T> to_host(const DeviceBuffer& buf, size_t count) {
  std::vector<T> host(count);
  buf.download(host.data(), count * sizeof(T));
  return host;
}

// Case groups (op_cases.cpp, kv_cases.cpp, chain_cases.cpp: CUDA only) and the perf mode (perf.cpp).
void run_op_cases(BackendOps& ops, Reporter& report);
void run_kv_cases(BackendOps& ops, Reporter& report);
void run_chain_cases(BackendOps& ops, Reporter& report);
void run_perf(BackendOps& ops, const Options& options);

}  // namespace podkv::backend_test
