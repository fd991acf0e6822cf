// podkv memory: the KV-cache memory benchmark. For every policy and context
// length: KV bytes per sequence (the analytic formula of the method page, from
// config.json alone), the saving against dense, and the largest batch that
// fits a memory budget. With --measure, every policy also prefills a sequence
// of each length on the model's weights and reports what the paged cache
// really holds, beside the formula, and how many such sequences a cache of
// --memory bytes really takes; --device cuda runs those prefills on the GPU
// (the pool in device memory; the page bookkeeping is the host's either way).
#include <climits>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "backend/make_backend.h"
#include "commands.h"
#include "common.h"
#include "engine/runner.h"
#include "ops/matmul.h"
#include "policy/policy_spec.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

struct MemoryCommand {
  std::string model;
  std::vector<std::string> kv = {"dense,pod,streaming,h2o,snapkv,cla,pod+snapkv"};
  KvOptions shared;
  std::vector<int64_t> contexts = {4096, 16384, 32768};
  std::string memory = "16G";
  bool measure = false;
  std::string device = "cpu";  // --device: where --measure prefills
  std::string cuda_weights = "bf16";
  std::string device_option;  // "--device" or "--cuda-weights" when given on the command line
  int threads = 0;
  bool json = false;
};

struct Measured {
  size_t reserved = 0;  // pages held, counted in the page tables
  size_t formula = 0;   // the analytic formula
};

// Prefills `length` random tokens under `policy` on `backend` in a cache of
// `dtype` entries (its pool made by the backend: device memory on CUDA) and
// returns the bytes the cache holds for the sequence.
Measured measure(Backend& backend, const NamedPolicy& policy, int64_t length, KvDType dtype) {
  const Model& model = backend.model();
  auto cache = make_cache(policy.layout, length, 1, 256, dtype);
  Runner runner(backend, *cache);
  runner.set_tau(policy.tau);
  std::mt19937 rng(11);
  std::vector<int32_t> ids(static_cast<size_t>(length));
  for (auto& id : ids) id = static_cast<int32_t>(rng() % model.config().vocab_size);
  const int seq = cache->add_sequence();
  std::vector<float> logits;
  runner.forward(seq, ids, false, logits);
  return {cache->bytes_reserved(seq), cache->bytes_in_use(seq)};
}

// Sequences of `length` tokens that a cache of `budget` bytes (`dtype`
// entries) really takes: each is reserved and committed chunk by chunk as a
// prefill would be, until the cache refuses one (bookkeeping only).
int64_t measured_batch(const KvLayout& layout, int64_t length, size_t budget, KvDType dtype) {
  KvCache cache(layout, budget, 16, dtype);
  const int64_t chunk = 256;
  for (int64_t batch = 0;; ++batch) {
    const int seq = cache.add_sequence();
    try {
      cache.check_fits(seq, length, chunk, true);
      for (int64_t end = std::min(length, chunk);; end = std::min(length, end + chunk)) {
        cache.reserve(seq, end);
        cache.commit(seq, end);
        if (end == length) break;
      }
      cache.end_prefill(seq);
    } catch (const KvCacheFull&) {
      return batch;
    }
  }
}

std::string human(double bytes) {
  char buf[32];
  if (bytes >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  else if (bytes >= 1e6) std::snprintf(buf, sizeof buf, "%.2f MB", bytes / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1f KB", bytes / 1e3);
  return buf;
}

void run(const MemoryCommand& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  // Without --measure nothing runs on a device: say so rather than ignore the option.
  if (!o.device_option.empty() && !o.measure)
    throw Error(o.device_option + ": only --measure runs the model; add --measure or leave " + o.device_option + " out");
  check_device_options(o.device, o.cuda_weights);  // before the model loads
  // The default entry type of the table; a policy may name its own (dtype=...).
  const KvDType dtype = parse_kv_dtype(o.shared.kv_dtype.empty() ? "f16" : o.shared.kv_dtype);
  const std::string dtype_name = kv_dtype_name(dtype);
  const size_t budget = parse_bytes(o.memory, "--memory");
  // --measure fills a real cache of --memory bytes: keep that within reason.
  if (o.measure && budget > (size_t{4} << 30))
    throw Error("--memory: " + o.memory + " with --measure would allocate that much; give at most 4G");
  const ModelConfig c = Model::load_config(o.model);
  for (int64_t n : o.contexts) {
    if (n < 1) throw Error("--contexts: lengths must be positive, got " + std::to_string(n));
    // With the config's bounds (at most 2^31 KV bytes per token), 2^31 tokens keep every size below 2^62.
    if (n > INT32_MAX) throw Error("--contexts: " + std::to_string(n) + " tokens is above the supported 2147483647");
    if (o.measure && n > c.max_position_embeddings)
      throw Error("--contexts: " + std::to_string(n) + " tokens is longer than the model's context (" +
                  std::to_string(c.max_position_embeddings) + ") and --measure runs the model");
  }
  const std::vector<NamedPolicy> policies = resolve_policies(o.kv, o.shared, c, o.model);
  std::unique_ptr<Model> model = o.measure ? Model::load(o.model) : nullptr;
  // One backend for every row (the CUDA one uploads the weights once).
  std::unique_ptr<Backend> backend = model ? make_backend(o.device, *model, o.cuda_weights) : nullptr;
  const KvLayout dense = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
  const int64_t entry = static_cast<int64_t>(kv_entry_bytes(dtype, c.head_dim));

  nlohmann::json rows = nlohmann::json::array();
  for (int64_t n : o.contexts) {
    const int64_t dense_bytes = dense.retained_vectors(n) * entry;
    const int64_t dense_batch = static_cast<int64_t>(budget / static_cast<size_t>(dense_bytes));
    for (const NamedPolicy& p : policies) {
      const KvDType p_dtype = p.kv_dtype.empty() ? dtype : parse_kv_dtype(p.kv_dtype);
      const int64_t bytes = p.layout.retained_vectors(n) * static_cast<int64_t>(kv_entry_bytes(p_dtype, c.head_dim));
      const int64_t batch = static_cast<int64_t>(budget / static_cast<size_t>(bytes));
      nlohmann::json row = {{"policy", p.label}, {"options", p.options}, {"context", n},
                            {"kv_bytes_per_sequence", bytes}, {"dense_kv_bytes_per_sequence", dense_bytes},
                            {"kv_saving", 1.0 - static_cast<double>(bytes) / static_cast<double>(dense_bytes)},
                            {"max_batch", batch}, {"dense_max_batch", dense_batch}, {"kv_dtype", kv_dtype_name(p_dtype)},
                            {"batch_gain", dense_batch > 0 ? static_cast<double>(batch) / dense_batch : 0.0}};
      if (model) {
        const Measured m = measure(*backend, p, n, p_dtype);
        row["measured_bytes_reserved"] = m.reserved;
        row["formula_bytes"] = m.formula;
        row["measured_max_batch"] = measured_batch(p.layout, n, budget, p_dtype);
        // The float32 figures of earlier versions, kept for scripts that read them.
        row["formula_bytes_float32"] = p.layout.retained_vectors(n) * c.head_dim * 4;
        row["measured_max_batch_float32"] = measured_batch(p.layout, n, budget, KvDType::F32);
      }
      rows.push_back(row);
    }
  }
  nlohmann::json result = {{"model", o.model}, {"num_layers", c.num_layers}, {"num_kv_heads", c.num_kv_heads},
                           {"head_dim", c.head_dim}, {"kv_dtype", dtype_name}, {"memory", budget}, {"rows", rows}};
  // Where the measured prefills ran (only --measure runs anything).
  const std::string measured_on = o.device == "cuda" ? "cuda (" + o.cuda_weights + " weights)" : o.device;
  if (model) result["device"] = o.device;
  if (o.json) {
    std::printf("%s\n", result.dump(2).c_str());
    return;
  }
  std::printf("KV cache per sequence (%s entries; %d layers, %d KV heads, head_dim %d) and the largest batch in %s%s\n\n",
              dtype_name.c_str(), c.num_layers, c.num_kv_heads, c.head_dim, o.memory.c_str(),
              model ? ("; measured on " + measured_on).c_str() : "");
  std::printf("| policy | context | KV / sequence | saved | max batch | dense batch | batch gain |%s\n",
              model ? " measured bytes (pages) | formula | measured batch |" : "");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |%s\n", model ? " ---: | ---: | ---: |" : "");
  for (const auto& r : rows) {
    std::printf("| %s | %lld | %s | %.1f%% | %lld | %lld | %.2fx |", r["policy"].get<std::string>().c_str(),
                r["context"].get<long long>(), human(r["kv_bytes_per_sequence"].get<double>()).c_str(),
                100.0 * r["kv_saving"].get<double>(), r["max_batch"].get<long long>(),
                r["dense_max_batch"].get<long long>(), r["batch_gain"].get<double>());
    if (model)
      std::printf(" %lld | %lld | %lld |", r["measured_bytes_reserved"].get<long long>(), r["formula_bytes"].get<long long>(),
                  r["measured_max_batch"].get<long long>());
    std::printf("\n");
  }
}

}  // namespace

void add_memory_command(CLI::App& app) {
  auto o = std::make_shared<MemoryCommand>();
  CLI::App* cmd = app.add_subcommand("memory", "KV bytes per sequence and the largest batch per policy and context");
  cmd->add_option("-m,--model", o->model, "model directory (config.json alone is enough without --measure) or .gguf")->required();
  cmd->add_option("--kv", o->kv, "policies, comma-separated, each NAME[:KEY=VALUE...] as in eval")->capture_default_str();
  cmd->add_option("--contexts", o->contexts, "context lengths in tokens")->delimiter(',')->capture_default_str();
  cmd->add_option("--memory", o->memory, "KV memory budget for the batch columns (e.g. 16G)")->capture_default_str();
  cmd->add_flag("--measure", o->measure, "also prefill each length on the model and report the bytes the cache holds");
  cmd->add_option("--device", o->device, "where --measure prefills: cpu or cuda")->capture_default_str();
  cmd->add_option("--cuda-weights", o->cuda_weights, "--measure on cuda: weight matrices bf16 or f32")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads for --measure (default: all cores)");
  cmd->add_flag("--json", o->json, "print JSON instead of the table");
  add_kv_settings(*cmd, o->shared, "f16");
  cmd->callback([o, cmd] {
    o->device_option = cmd->count("--device") ? "--device" : cmd->count("--cuda-weights") ? "--cuda-weights" : "";
    run(*o);
  });
}

}  // namespace podkv::cli
