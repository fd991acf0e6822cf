// podkv bench: prefill and decode speed with achieved bandwidth, against a
// streaming copy measured in the same run; a llama-bench style table or JSON.
// A policy other than dense is timed beside dense in the same run.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "commands.h"
#include "common.h"
#include "bench_probe/bandwidth.h"
#include "backend/cuda_backend.h"
#include "backend/make_backend.h"
#include "engine/runner.h"
#include "ops/matmul.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

struct BenchCommand {
  std::string model;
  std::string prompts = "128";
  std::string gen = "32";
  std::string depths = "0";
  std::string batches = "1";
  int repetitions = 3;
  int threads = 0;
  bool exact_quant = false;
  bool json = false;
  KvOptions kv;
  std::string device = "cpu";
  std::string cuda_weights = "bf16";
  bool random_weights = false;
  bool profile = false;
  int page_tokens = 16;
  int64_t prefill_chunk = 0;  // 0: 256 on the CPU, 8192 on the GPU
  std::string kv_memory;  // --kv-memory: one budget; each decode test admits as many sequences as it holds
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

// Multiply-adds of the weight matrices per token (every layer's projections and the LM head).
double matmul_flops_per_token(const ModelConfig& c) {
  const double h = c.hidden_size, q = static_cast<double>(c.q_dim()), kv = static_cast<double>(c.kv_dim());
  const double per_layer = h * (q + 2 * kv) + q * h + 3 * h * c.intermediate_size;
  return 2.0 * (per_layer * c.num_layers + static_cast<double>(c.vocab_size) * h);
}

// The machine's float32 GEMM rate in this run: y[1024, 1024] = x · Wᵀ, W 1024 x 1024.
double measure_gemm_gflops() {
  const int64_t n = 1024;
  std::vector<float> w(n * n, 0.01f), x(n * n, 1.0f), y(n * n);
  WeightMatrix m{DType::F32, n, n, w.data()};
  matmul(m, x.data(), n, y.data());  // warm-up
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const double t0 = now();
    matmul(m, x.data(), n, y.data());
    best = std::max(best, 2.0 * n * n * n / (now() - t0) / 1e9);
  }
  return best;
}

// One timed test: a prefill of `prompt` tokens, or `gen` decode steps of
// `batch` sequences decoding together after a context of depth + 1 tokens
// each. Returns tokens/s (all sequences), GB/s (weights once per decode step
// plus the KV bytes each step reads; weights once per prefill) and GFLOP/s of
// the weight matmuls. With `synthetic_depth` the depth's KV entries are
// reserved and committed without a prefill (their values are whatever the pool
// holds): decode at 32K contexts and batch 128 is timed without minutes of prefill.
// `budget` > 0: one cache of that many bytes, filled with as many sequences as
// it admits (batch = 0) or refusing a batch it cannot hold (KvCacheFull).
struct Sample {
  double tokens_per_s = 0, gb_per_s = 0, gflop_per_s = 0;
  int batch = 0;
  std::vector<std::pair<std::string, double>> profile;  // --profile: GPU ms per step by region
  double wall_ms = 0;                                     // wall time per step (prefill: the whole forward)
};

// --profile on the CUDA backend: per-region GPU time of the work between start and stop.
void profile_start(Backend& backend, bool on) {
#if defined(PODKV_HAVE_CUDA)
  if (auto* cuda = dynamic_cast<CudaBackend*>(&backend)) cuda->ops().set_profiling(on);
#else
  (void)backend, (void)on;
#endif
}

std::vector<std::pair<std::string, double>> profile_stop(Backend& backend, double steps) {
  std::vector<std::pair<std::string, double>> regions;
#if defined(PODKV_HAVE_CUDA)
  if (auto* cuda = dynamic_cast<CudaBackend*>(&backend)) {
    regions = cuda->ops().profile();
    cuda->ops().set_profiling(false);
  }
#endif
  for (auto& r : regions) r.second /= steps;
  return regions;
}

struct TestSetup {
  Backend* backend = nullptr;
  bool profile = false;
  int page_tokens = 16;
  int64_t prefill_chunk = 256;
  KvDType dtype = KvDType::F32;
  bool synthetic_depth = false;
  size_t budget = 0;
};

void fill_synthetic(KvCache& cache, int seq, int64_t length) {
  for (int64_t at = 0; at < length;) {
    const int64_t to = std::min(length, at + 256);
    cache.reserve(seq, to);
    cache.commit(seq, to);
    at = to;
  }
}

Sample time_test(const TestSetup& t, const KvLayout& layout, std::optional<float> tau, int64_t prompt, int64_t depth,
                 int64_t gen, int batch, const std::function<std::vector<int32_t>(int64_t)>& random_ids) {
  const Model& model = t.backend->model();
  const double weight_bytes = static_cast<double>(model.bytes_per_decode_token());
  const double flops = matmul_flops_per_token(model.config());
  std::vector<float> logits;
  if (prompt > 0) {
    auto cache = make_cache(layout, prompt, 1, t.prefill_chunk, t.dtype);
    Runner runner(*t.backend, *cache);
    runner.set_chunk_size(t.prefill_chunk);
    runner.set_tau(tau);
    const auto ids = random_ids(prompt);
    profile_start(*t.backend, t.profile);
    const double t0 = now();
    runner.forward(cache->add_sequence(), ids, false, logits);
    const double dt = now() - t0;
    return {prompt / dt, weight_bytes / dt / 1e9, flops * prompt / dt / 1e9, 1, profile_stop(*t.backend, 1), dt * 1e3};
  }
  const int64_t length = depth + gen + 1;
  std::unique_ptr<KvCache> cache;
  if (t.budget > 0) {
    cache = std::make_unique<KvCache>(layout, t.budget, t.page_tokens, t.dtype);
  } else {
    KvCache probe(layout, 0, t.page_tokens, t.dtype);  // sizes only
    const int64_t pages = probe.peak_pages(0, length, std::min<int64_t>(256, length), length);
    cache = std::make_unique<KvCache>(layout, static_cast<size_t>(pages) * batch * probe.page_bytes(), t.page_tokens,
                                      t.dtype);
  }
  Runner runner(*t.backend, *cache);
  runner.set_tau(tau);
  Batch step;
  const SampleRequest greedy;  // temperature 0: the argmax
  for (int b = 0; b < batch || batch == 0; ++b) {
    const int seq = cache->add_sequence();
    if (t.budget > 0) {  // admit while the whole sequence (context and decode steps) fits
      try {
        cache->check_fits(seq, length, 256);
      } catch (const KvCacheFull&) {
        cache->remove_sequence(seq);
        break;
      }
    }
    if (t.synthetic_depth) fill_synthetic(*cache, seq, depth + 1);
    else runner.forward(seq, random_ids(depth + 1), false, logits);
    // Each step draws the next token greedily, as generate does (on the GPU only ids come back).
    step.entries.push_back(BatchEntry{seq, {}, LogitRows::Last, 0, false, &greedy});
  }
  if (step.entries.empty() || (batch > 0 && static_cast<int>(step.entries.size()) < batch))
    return {0, 0, 0, static_cast<int>(step.entries.size()), {}, 0};  // does not fit in the budget
  BatchResult out;
  auto decode_step = [&] {
    for (BatchEntry& e : step.entries) e.tokens = random_ids(1);
    runner.step(step, out);
  };
  // The first steps of a batch are not its steady state: the first copies every page table of the
  // batch into the step's view (64 sequences of 8K tokens: 4.2M entries), and on CUDA the second
  // captures the step's graph. Of the gen steps, the first two (when gen > 2) run before the clock.
  const int64_t warm = gen > 2 ? 2 : 0, timed = gen - warm;
  for (int64_t i = 0; i < warm; ++i) decode_step();
  double kv_bytes = 0;
  profile_start(*t.backend, t.profile);
  const double t0 = now();
  for (int64_t i = 0; i < timed; ++i) {
    for (const BatchEntry& e : step.entries)
      kv_bytes += static_cast<double>(cache->bytes_in_use(e.seq));  // keys and values read by this step
    decode_step();
  }
  const double dt = now() - t0;
  const double n = static_cast<double>(step.entries.size());
  return {n * timed / dt, (weight_bytes * timed + kv_bytes) / dt / 1e9, flops * n * timed / dt / 1e9,
          static_cast<int>(step.entries.size()), profile_stop(*t.backend, static_cast<double>(timed)), dt * 1e3 / timed};
}

void run(const BenchCommand& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  apply_exact_quant(o.exact_quant);
  if (o.repetitions < 1) throw Error("-r: at least one repetition");
  if (o.random_weights && o.device != "cuda") throw Error("--random-weights: needs --device cuda");
  auto model = o.random_weights ? Model::shapes_only(o.model) : Model::load(o.model);
  const ModelConfig& c = model->config();
  auto backend = make_backend(o.device, *model, o.cuda_weights);
  TestSetup setup;
  setup.backend = backend.get();
  setup.profile = o.profile;
  if (o.page_tokens < 1 || o.page_tokens > 4096) throw Error("--page-tokens: must be in 1..4096");
  setup.page_tokens = o.page_tokens;
  setup.prefill_chunk = prefill_chunk_for(o.prefill_chunk, o.device);
  std::vector<std::string> profiles;  // --profile lines, printed after the table
  setup.synthetic_depth = o.device != "cpu";
  if (!o.kv_memory.empty()) setup.budget = parse_bytes(o.kv_memory, "--kv-memory");
  const auto prompts = parse_int_list(o.prompts, "-p", "a token count");
  const auto gens = parse_int_list(o.gen, "-n", "a token count");
  const auto depths = parse_int_list(o.depths, "-d", "a token count");
  const auto batches = parse_int_list(o.batches, "-b", "a batch size");
  for (int32_t b : batches) {
    if (b < 0 || b > 4096) throw Error("-b: batch sizes must be in 1..4096 (0 = as many as --kv-memory holds), got " + std::to_string(b));
    if (b == 0 && o.kv_memory.empty()) throw Error("-b 0: the largest batch needs --kv-memory");
  }
  const KvDType kv_dtype = kv_dtype_from_options(o.kv, *model);
  setup.dtype = kv_dtype;
  std::mt19937 rng(7);
  auto random_ids = [&](int64_t n) {
    std::vector<int32_t> ids(n);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % c.vocab_size);
    return ids;
  };
  // The policy under test, and dense measured in the same run as the reference
  // (repetitions interleaved, so drift of the machine hits both alike).
  struct Arm {
    std::string name;
    KvLayout layout;
    std::optional<float> tau;
  };
  std::vector<Arm> arms;
  {
    Arm arm{o.kv.policy, {}, std::nullopt};
    arm.layout = kv_layout_from_options(o.kv, c, o.model, &arm.tau);
    if (o.kv.policy != "dense") arms.push_back({"dense", KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), std::nullopt});
    arms.push_back(std::move(arm));
  }
  // Same-run references: the host's streaming copy/read and f32 GEMM, or the GPU's copy and bf16 GEMM.
  double copy_gbs = 0, read_gbs = 0, gemm_gflops = 0;
  std::string reference_note;
#if defined(PODKV_HAVE_CUDA)
  if (auto* cuda = dynamic_cast<CudaBackend*>(backend.get())) {
    copy_gbs = cuda->ops().measure_copy_gbs(size_t{2} << 30, 5);
    read_gbs = copy_gbs;
    gemm_gflops = cuda->ops().measure_bf16_gemm_tflops(8192, 5) * 1e3;
    reference_note = cuda->ops().device_name() + ": device copy " + std::to_string(static_cast<int>(copy_gbs)) +
                     " GB/s (read + write), bf16 GEMM 8192^3 " + std::to_string(static_cast<int>(gemm_gflops / 1e3)) +
                     " TFLOP/s; KV depth filled without a prefill";
  }
#endif
  if (reference_note.empty()) {
    copy_gbs = measure_copy_bandwidth_gbs(size_t{256} << 20, 5);
    read_gbs = measure_read_bandwidth_gbs(size_t{256} << 20, 5);
    gemm_gflops = measure_gemm_gflops();
  }
  const double weight_bytes = static_cast<double>(model->bytes_per_decode_token());
  nlohmann::json rows = nlohmann::json::array();

  auto run_test = [&](const std::string& test, int64_t prompt, int64_t depth, int64_t gen, int batch) {
    std::vector<std::vector<double>> tps(arms.size()), gbs(arms.size()), gfs(arms.size());
    std::vector<int> batches(arms.size(), batch);
    for (int r = 0; r < o.repetitions + 1; ++r) {
      for (size_t a = 0; a < arms.size(); ++a) {
        if (r > 0 && tps[a].empty() && batches[a] != batch && batch > 0) continue;  // did not fit
        const Sample sample = time_test(setup, arms[a].layout, arms[a].tau, prompt, depth, gen, batch, random_ids);
        batches[a] = sample.batch;
        if (r == 0 || sample.tokens_per_s == 0) continue;  // warm-up, or the batch does not fit
        if (o.profile && r == o.repetitions && !sample.profile.empty()) {
          double gpu = 0;
          std::string line = test + " " + arms[a].name + ": wall " + std::to_string(sample.wall_ms) + " ms";
          for (const auto& [name, ms] : sample.profile) gpu += ms;
          line += ", GPU regions " + std::to_string(gpu) + " ms:";
          for (const auto& [name, ms] : sample.profile) line += " " + name + " " + std::to_string(ms) + ";";
          profiles.push_back(line);
        }
        tps[a].push_back(sample.tokens_per_s);
        gbs[a].push_back(sample.gb_per_s);
        gfs[a].push_back(sample.gflop_per_s);
      }
    }
    const double dense_tps = tps[0].empty() ? 0.0 : stats(tps[0]).mean;
    for (size_t a = 0; a < arms.size(); ++a) {
      if (tps[a].empty()) {  // the batch does not fit in --kv-memory
        rows.push_back({{"test", test}, {"kv_policy", arms[a].name}, {"tokens", gen}, {"depth", depth},
                        {"batch", batch}, {"fits", false}, {"batch_admitted", batches[a]}});
        continue;
      }
      const Stat t = stats(tps[a]), g = stats(gbs[a]), f = stats(gfs[a]);
      rows.push_back({{"test", test}, {"kv_policy", arms[a].name}, {"tokens", prompt > 0 ? prompt : gen},
                      {"depth", depth}, {"batch", batches[a]}, {"tokens_per_s", t.mean}, {"tokens_per_s_stddev", t.stddev},
                      {"gflop_per_s", f.mean}, {"gemm_gflop_per_s", gemm_gflops},
                      {"time_vs_dense", dense_tps > 0 ? nlohmann::json(dense_tps / t.mean) : nlohmann::json(nullptr)},
                      {"fits", true}, {"gb_per_s", g.mean}, {"copy_gb_per_s", copy_gbs},
                      {"bandwidth_fraction", g.mean / copy_gbs}, {"read_gb_per_s", read_gbs},
                      {"read_bandwidth_fraction", g.mean / read_gbs}});
    }
  };
  for (int32_t p : prompts) {
    if (p <= 0) continue;
    if (p > c.max_position_embeddings) throw Error("-p: " + std::to_string(p) + " is longer than the model's context");
    run_test("pp" + std::to_string(p), p, 0, 0, 1);
  }
  for (int32_t d : depths) {
    for (int32_t n : gens) {
      if (n <= 0) continue;
      if (d + n + 1 > c.max_position_embeddings) throw Error("-d/-n: depth + tokens exceed the model's context");
      for (int32_t b : batches)
        run_test("tg" + std::to_string(n) + (d > 0 ? " @ d" + std::to_string(d) : "") +
                     (b > 1 ? " x b" + std::to_string(b) : b == 0 ? " x max batch" : ""),
                 0, d, n, b);
    }
  }
  nlohmann::json result = {{"model", o.model}, {"parameters", c.parameter_count()},
                           {"dtype", dtype_name(model->weight_dtype())}, {"threads", num_threads()},
                           {"quant_dot", quant_dot() == QuantDot::Exact ? "exact" : "int8"},
                           {"device", o.device}, {"random_weights", o.random_weights}, {"reference", reference_note},
                           {"weight_bytes_per_token", weight_bytes}, {"kv_policy", o.kv.policy},
                           {"kv_dtype", kv_dtype_name(kv_dtype)}, {"gemm_gflop_per_s", gemm_gflops},
                           {"copy_gb_per_s", copy_gbs}, {"read_gb_per_s", read_gbs}, {"results", rows}};
  result["profile"] = profiles;
  if (o.json) {
    std::printf("%s\n", result.dump(2).c_str());
    return;
  }
  if (!reference_note.empty())
    std::printf("same run: %s; KV entries %s\n", reference_note.c_str(), kv_dtype_name(kv_dtype));
  else
    std::printf("same run: streaming copy %.1f GB/s (read + write), streaming read %.1f GB/s, f32 GEMM 1024^3 %.1f "
                "GFLOP/s; %d threads; KV entries %s\n",
                copy_gbs, read_gbs, gemm_gflops, num_threads(), kv_dtype_name(kv_dtype));
  std::printf("time vs dense: time per token relative to dense in the same run (1.00 = as fast; n/a: dense does "
              "not fit that batch)\n\n");
  std::printf("| model | params | dtype | kv | test | batch | t/s | time vs dense | GB/s | of copy | of read | GFLOP/s | of GEMM |\n");
  std::printf("| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const auto& row : rows) {
    if (!row["fits"].get<bool>()) {
      std::printf("| %s | %.1fM | %s | %s | %s | %d | does not fit in --kv-memory (%d admitted) | | | | | | |\n",
                  o.model.c_str(), c.parameter_count() / 1e6, dtype_name(model->weight_dtype()),
                  row["kv_policy"].get<std::string>().c_str(), row["test"].get<std::string>().c_str(),
                  row["batch"].get<int>(), row["batch_admitted"].get<int>());
      continue;
    }
    // Dense did not fit this batch: nothing to compare with.
    char vs_dense[32] = "n/a";
    if (!row["time_vs_dense"].is_null()) std::snprintf(vs_dense, sizeof vs_dense, "%.2f", row["time_vs_dense"].get<double>());
    std::printf("| %s | %.1fM | %s | %s | %s | %d | %.2f ± %.2f | %s | %.1f | %.0f%% | %.0f%% | %.1f | %.0f%% |\n", o.model.c_str(),
                c.parameter_count() / 1e6, dtype_name(model->weight_dtype()), row["kv_policy"].get<std::string>().c_str(),
                row["test"].get<std::string>().c_str(), row["batch"].get<int>(), row["tokens_per_s"].get<double>(),
                row["tokens_per_s_stddev"].get<double>(), vs_dense, row["gb_per_s"].get<double>(),
                100.0 * row["bandwidth_fraction"].get<double>(), 100.0 * row["read_bandwidth_fraction"].get<double>(),
                row["gflop_per_s"].get<double>(), 100.0 * row["gflop_per_s"].get<double>() / gemm_gflops);
  }
  if (!profiles.empty()) std::printf("\nGPU time per step by region (--profile; regions are timed one by one):\n");
  for (const std::string& line : profiles) std::printf("  %s\n", line.c_str());
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchCommand>();
  CLI::App* cmd = app.add_subcommand("bench", "prefill and decode speed with achieved memory bandwidth");
  cmd->add_option("-m,--model", o->model, "model directory or .gguf file")->required();
  cmd->add_option("-p,--n-prompt", o->prompts, "prefill lengths, comma-separated (0 = none)")->capture_default_str();
  cmd->add_option("-n,--n-gen", o->gen, "decode lengths, comma-separated (0 = none)")->capture_default_str();
  cmd->add_option("-d,--depth", o->depths, "context depths decode starts at, comma-separated")->capture_default_str();
  cmd->add_option("-b,--batch", o->batches, "decode batch sizes (sequences decoding together), comma-separated")
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", o->repetitions, "timed repetitions (after one warm-up)")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  add_exact_quant_option(*cmd, o->exact_quant);
  add_kv_options(*cmd, o->kv);
  cmd->add_option("--device", o->device, "where the forward runs: cpu or cuda")->capture_default_str();
  cmd->add_option("--cuda-weights", o->cuda_weights, "weight matrices on the GPU: bf16 or f32")->capture_default_str();
  cmd->add_flag("--random-weights", o->random_weights,
                "random bf16 weights made on the GPU (-m may be a directory with only config.json; needs --device cuda)");
  cmd->add_option("--kv-memory", o->kv_memory,
                  "one KV budget (e.g. 96G) for each decode test; -b 0 admits as many sequences as it holds");
  cmd->add_option("--page-tokens", o->page_tokens,
                  "tokens per KV page (the page tables sent each step shrink with larger pages)")
      ->capture_default_str();
  cmd->add_option("--prefill-chunk", o->prefill_chunk,
                  "prompt tokens per forward step in prefill tests (default 256 on cpu, 8192 on cuda)");
  cmd->add_flag("--profile", o->profile, "cuda: GPU time per step by region (norms, matmuls, attention, ...)");
  cmd->add_flag("--json", o->json, "print JSON instead of the table");
  cmd->callback([o] { run(*o); });
}

}  // namespace podkv::cli
