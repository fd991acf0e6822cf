// podkv bench: prefill and decode speed with achieved bandwidth, against a
// streaming copy measured in the same run; a llama-bench style table or JSON.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "commands.h"
#include "common.h"
#include "model/forward.h"
#include "ops/bandwidth.h"
#include "ops/matmul.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

struct BenchCommand {
  std::string model;
  std::string prompts = "128";
  std::string gen = "32";
  std::string depths = "0";
  int repetitions = 3;
  int threads = 0;
  bool json = false;
  KvOptions kv;
};

struct Stat {
  double mean = 0, stddev = 0;
};

Stat stats(const std::vector<double>& v) {
  Stat s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
  s.stddev = v.size() > 1 ? std::sqrt(s.stddev / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void run(const BenchCommand& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  if (o.repetitions < 1) throw Error("-r: at least one repetition");
  auto model = Model::load(o.model);
  const ModelConfig& c = model->config();
  const auto prompts = parse_id_list(o.prompts, "-p");
  const auto gens = parse_id_list(o.gen, "-n");
  const auto depths = parse_id_list(o.depths, "-d");
  std::mt19937 rng(7);
  auto random_ids = [&](int64_t n) {
    std::vector<int32_t> ids(n);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % c.vocab_size);
    return ids;
  };
  std::optional<float> tau;
  const KvLayout layout = kv_layout_from_options(o.kv, c, o.model, &tau);
  const double copy_gbs = measure_copy_bandwidth_gbs(size_t{256} << 20, 5);
  const double read_gbs = measure_read_bandwidth_gbs(size_t{256} << 20, 5);
  const double weight_bytes = static_cast<double>(model->bytes_per_decode_token());
  nlohmann::json rows = nlohmann::json::array();
  std::vector<float> logits;

  auto record = [&](const std::string& test, int64_t tokens, int64_t depth, const std::vector<double>& tps,
                    const std::vector<double>& gbs) {
    Stat t = stats(tps), g = stats(gbs);
    rows.push_back({{"test", test}, {"tokens", tokens}, {"depth", depth}, {"tokens_per_s", t.mean},
                    {"tokens_per_s_stddev", t.stddev}, {"gb_per_s", g.mean}, {"copy_gb_per_s", copy_gbs},
                    {"bandwidth_fraction", g.mean / copy_gbs}, {"read_gb_per_s", read_gbs},
                    {"read_bandwidth_fraction", g.mean / read_gbs}});
  };
  for (int32_t p : prompts) {
    if (p <= 0) continue;
    if (p > c.max_position_embeddings) throw Error("-p: " + std::to_string(p) + " is longer than the model's context");
    std::vector<double> tps, gbs;
    for (int r = 0; r < o.repetitions + 1; ++r) {
      auto cache = make_cache(layout, p);
      Runner runner(*model, *cache);
      runner.set_tau(tau);
      const auto ids = random_ids(p);
      const double t0 = now();
      runner.forward(cache->add_sequence(), ids, false, logits);
      const double dt = now() - t0;
      if (r == 0) continue;  // warm-up
      tps.push_back(p / dt);
      gbs.push_back(weight_bytes / dt / 1e9);  // weights are read once per chunk of the prefill
    }
    record("pp" + std::to_string(p), p, 0, tps, gbs);
  }
  for (int32_t d : depths) {
    for (int32_t n : gens) {
      if (n <= 0) continue;
      if (d + n + 1 > c.max_position_embeddings) throw Error("-d/-n: depth + tokens exceed the model's context");
      std::vector<double> tps, gbs;
      for (int r = 0; r < o.repetitions + 1; ++r) {
        auto cache = make_cache(layout, d + n + 1);
        Runner runner(*model, *cache);
        runner.set_tau(tau);
        const int seq = cache->add_sequence();
        runner.forward(seq, random_ids(d + 1), false, logits);
        const double t0 = now();
        double kv_bytes = 0;
        for (int i = 0; i < n; ++i) {
          kv_bytes += static_cast<double>(cache->bytes_in_use(seq));  // keys and values read by this step
          runner.forward(seq, random_ids(1), false, logits);
        }
        const double dt = now() - t0;
        if (r == 0) continue;
        tps.push_back(n / dt);
        gbs.push_back((weight_bytes * n + kv_bytes) / dt / 1e9);
      }
      record("tg" + std::to_string(n) + (d > 0 ? " @ d" + std::to_string(d) : ""), n, d, tps, gbs);
    }
  }
  nlohmann::json result = {{"model", o.model}, {"parameters", c.parameter_count()},
                           {"dtype", dtype_name(model->weight_dtype())}, {"threads", num_threads()},
                           {"weight_bytes_per_token", weight_bytes}, {"kv_policy", o.kv.policy}, {"copy_gb_per_s", copy_gbs}, {"read_gb_per_s", read_gbs}, {"results", rows}};
  if (o.json) {
    std::printf("%s\n", result.dump(2).c_str());
    return;
  }
  std::printf("same run: streaming copy %.1f GB/s (read + write), streaming read %.1f GB/s; %d threads\n", copy_gbs,
              read_gbs, num_threads());
  std::printf("kv policy: %s\n\n", o.kv.policy.c_str());
  std::printf("| model | params | dtype | test | t/s | GB/s | of copy | of read |\n");
  std::printf("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |\n");
  for (const auto& row : rows) {
    std::printf("| %s | %.1fM | %s | %s | %.2f ± %.2f | %.1f | %.0f%% | %.0f%% |\n", o.model.c_str(), c.parameter_count() / 1e6,
                dtype_name(model->weight_dtype()), row["test"].get<std::string>().c_str(),
                row["tokens_per_s"].get<double>(), row["tokens_per_s_stddev"].get<double>(), row["gb_per_s"].get<double>(),
                100.0 * row["bandwidth_fraction"].get<double>(), 100.0 * row["read_bandwidth_fraction"].get<double>());
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchCommand>();
  CLI::App* cmd = app.add_subcommand("bench", "prefill and decode speed with achieved memory bandwidth");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file")->required();
  cmd->add_option("-p,--n-prompt", o->prompts, "prefill lengths, comma-separated (0 = none)")->capture_default_str();
  cmd->add_option("-n,--n-gen", o->gen, "decode lengths, comma-separated (0 = none)")->capture_default_str();
  cmd->add_option("-d,--depth", o->depths, "context depths decode starts at, comma-separated")->capture_default_str();
  cmd->add_option("-r,--repetitions", o->repetitions, "timed repetitions (after one warm-up)")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  add_kv_options(*cmd, o->kv);
  cmd->add_flag("--json", o->json, "print JSON instead of the table");
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
