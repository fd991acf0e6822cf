// End-to-end: the KV policies through the CLI (generate, logits, info,
// memory) on a real fixture model, and their bad input: one "error:" line
// naming the option or file, exit code 1.
#include <gtest/gtest.h>

#include "backend/cuda_backend_ops.h"
#include "cli_run.h"
#include "io/safetensors.h"

namespace podkv::clitest {
namespace {

using CliKv = CliTest;

const fs::path kGqaModel = kFixtures / "llama_gqa";  // 2 layers, 8 heads, 2 KV heads, context 1024

std::string ids_list(int n) {
  std::string ids;
  for (int i = 0; i < n; ++i) ids += (i ? "," : "") + std::to_string(3 + (i * 37) % 500);
  return ids;
}

TEST_F(CliKv, EveryPolicyGeneratesPastItsWindow) {
  for (const std::string policy : {"dense", "pod", "streaming", "h2o", "snapkv", "cla", "pod+snapkv"}) {
    std::vector<std::string> args = {"generate", "-m", kGqaModel.string(), "--ids", ids_list(60), "-n", "12",
                                     "--json", "--kv", policy, "--sink", "2", "--recent", "8", "--budget", "5"};
    if (policy == "pod" || policy == "pod+snapkv") args.insert(args.end(), {"--pod-group", "2"});
    const CliResult r = run(args);
    ASSERT_EQ(r.exit_code, 0) << policy << "\n" << r;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_GE(j.at("generated_ids").size(), 1u) << policy << "\n" << r.out;
    // Past the window every policy but dense holds less than dense would.
    if (policy == "dense") EXPECT_EQ(j.at("kv_bytes_in_use"), j.at("dense_kv_bytes")) << r.out;
    else EXPECT_LT(j.at("kv_bytes_in_use").get<int64_t>(), j.at("dense_kv_bytes").get<int64_t>()) << policy << "\n" << r.out;
  }
}

TEST_F(CliKv, OneLayerBlocksGiveDenseLogits) {
  const fs::path dense = tmp_ / "dense.safetensors", pod = tmp_ / "pod.safetensors";
  const std::string ids = ids_list(50);
  ASSERT_EQ(run({"logits", "-m", kGqaModel.string(), "--ids", ids, "--out", dense.string()}).exit_code, 0);
  ASSERT_EQ(run({"logits", "-m", kGqaModel.string(), "--ids", ids, "--out", pod.string(), "--kv", "pod", "--pod-group",
                 "1", "--sink", "2", "--recent", "4"})
                .exit_code,
            0);
  auto a = safetensors::File::open(dense.string());
  auto b = safetensors::File::open(pod.string());
  const auto* la = a.find("logits");
  const auto* lb = b.find("logits");
  ASSERT_TRUE(la && lb);
  const float* x = reinterpret_cast<const float*>(la->data);
  const float* y = reinterpret_cast<const float*>(lb->data);
  double diff = 0;
  for (int64_t i = 0; i < la->elements(); ++i) diff = std::max(diff, static_cast<double>(std::fabs(x[i] - y[i])));
  EXPECT_LT(diff, 1e-4);
}

TEST_F(CliKv, MemoryMeasuredBytesEqualTheFormula) {
  for (const std::string dtype : {"f32", "f16", "bf16", "q8_0"}) {
  const CliResult r = run({"memory", "-m", kGqaModel.string(), "--measure", "--contexts", "64,160", "--kv-dtype", dtype,
                           "--memory", "1M", "--pod-group", "2", "--sink", "16", "--recent", "32", "--budget", "16",
                           "--json", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.at("rows").size(), 14u);  // 7 policies x 2 lengths
  EXPECT_EQ(j.at("kv_dtype"), dtype);
  for (const auto& row : j.at("rows")) {
    const std::string what = dtype + " " + row.at("policy").get<std::string>() + " at " + row.at("context").dump();
    EXPECT_EQ(row.at("kv_dtype"), dtype) << what;
    EXPECT_EQ(row.at("measured_bytes_reserved"), row.at("formula_bytes")) << what;
    EXPECT_EQ(row.at("measured_bytes_reserved"), row.at("kv_bytes_per_sequence")) << what;
    if (dtype == "f32") {
      EXPECT_EQ(row.at("formula_bytes"), row.at("formula_bytes_float32")) << what;
    }
    // A real cache of --memory bytes takes the analytic batch, less at most
    // the transient room of one prefill.
    EXPECT_LE(row.at("measured_max_batch").get<int64_t>(), row.at("max_batch").get<int64_t>()) << what;
    EXPECT_GE(row.at("measured_max_batch").get<int64_t>(), row.at("max_batch").get<int64_t>() * 9 / 10 - 1) << what;
    if (row.at("policy") == "dense") {
      EXPECT_EQ(row.at("kv_saving").get<double>(), 0.0);
    } else if (row.at("context") == 160) {
      EXPECT_GT(row.at("kv_saving").get<double>(), 0.1) << what;
    }
  }
  }
}

// --device/--cuda-weights pick where --measure prefills; without --measure they would do nothing, so
// they are refused. Without a GPU, --device cuda ends in one line; with one, it measures what the CPU does.
TEST_F(CliKv, MemoryDeviceOptions) {
  const std::string m = kGqaModel.string();
  expect_error(run({"memory", "-m", m, "--device", "cuda"}), {"--device", "--measure"});
  expect_error(run({"memory", "-m", m, "--device", "cpu"}), {"--device", "--measure"});
  expect_error(run({"memory", "-m", m, "--cuda-weights", "f32"}), {"--cuda-weights", "--measure"});
  const std::vector<std::string> measure = {"memory", "-m", m, "--measure", "--kv", "dense,pod", "--pod-group", "2",
                                            "--contexts", "64,160", "--memory", "1M", "--json", "-t", "1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = measure;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_error(run(with({"--device", "tpu"})), {"--device", "tpu", "cuda"});
  expect_error(run(with({"--device", "cuda", "--cuda-weights", "f16"})), {"--cuda-weights", "f16"});

  const CliResult cpu = run(with({"--device", "cpu"}));
  ASSERT_EQ(cpu.exit_code, 0) << cpu;
  const auto cj = nlohmann::json::parse(cpu.out);
  EXPECT_EQ(cj.at("device"), "cpu");
  const CliResult formula = run({"memory", "-m", m, "--kv", "dense", "--json"});
  ASSERT_EQ(formula.exit_code, 0) << formula;
  EXPECT_FALSE(nlohmann::json::parse(formula.out).contains("device"));
  const CliResult table = run({"memory", "-m", m, "--measure", "--kv", "dense", "--contexts", "64", "--memory", "1M"});
  ASSERT_EQ(table.exit_code, 0) << table;
  EXPECT_NE(table.out.find("measured on cpu"), std::string::npos) << table.out;

  const CliResult cuda = run(with({"--device", "cuda", "--cuda-weights", "f32"}));
  if (!cuda_device_available()) {
    expect_error(cuda, {"--device cuda"});  // built without CUDA, or no GPU visible
    return;
  }
  ASSERT_EQ(cuda.exit_code, 0) << cuda;
  const auto gj = nlohmann::json::parse(cuda.out);
  EXPECT_EQ(gj.at("device"), "cuda");
  ASSERT_EQ(gj.at("rows").size(), cj.at("rows").size());
  for (size_t i = 0; i < cj.at("rows").size(); ++i)
    for (const char* key : {"measured_bytes_reserved", "formula_bytes", "measured_max_batch"})
      EXPECT_EQ(gj.at("rows")[i].at(key), cj.at("rows")[i].at(key)) << key << " of row " << i;
}

// bench's decode batches under one --kv-memory, dense beside PoD (the GPU benchmark's batch and
// largest-batch parts, on the CPU): a batch dense cannot hold is reported with the sequences it
// admitted, PoD's row beside it has no ratio to dense (null, "n/a" in the table), and -b 0 times the
// largest batch each holds: more PoD sequences than dense ones.
TEST_F(CliKv, BenchBatchesUnderOneKvMemory) {
  const CliResult r = run({"bench", "-m", kGqaModel.string(), "--kv", "pod", "--pod-group", "2", "--sink", "4", "--recent",
                           "32", "-p", "0", "-n", "2", "-d", "512", "-b", "2,8,0", "-r", "1", "--kv-memory", "2M",
                           "--json", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const auto rows = nlohmann::json::parse(r.out).at("results");
  ASSERT_EQ(rows.size(), 6u) << r.out;  // batches 2, 8 and the largest, each dense then pod
  auto row = [&](size_t i, const std::string& test, const std::string& kv) {
    EXPECT_EQ(rows[i].at("test"), test) << rows[i];
    EXPECT_EQ(rows[i].at("kv_policy"), kv) << rows[i];
    return rows[i];
  };
  const auto dense2 = row(0, "tg2 @ d512 x b2", "dense"), pod2 = row(1, "tg2 @ d512 x b2", "pod");
  EXPECT_TRUE(dense2.at("fits").get<bool>());
  EXPECT_EQ(dense2.at("time_vs_dense").get<double>(), 1.0);
  EXPECT_GT(pod2.at("time_vs_dense").get<double>(), 0.0) << pod2;
  EXPECT_GT(pod2.at("tokens_per_s").get<double>(), 0.0) << pod2;

  const auto dense8 = row(2, "tg2 @ d512 x b8", "dense"), pod8 = row(3, "tg2 @ d512 x b8", "pod");
  EXPECT_FALSE(dense8.at("fits").get<bool>()) << dense8;
  const int admitted = dense8.at("batch_admitted").get<int>();
  EXPECT_GE(admitted, 2);
  EXPECT_LT(admitted, 8);
  EXPECT_TRUE(pod8.at("fits").get<bool>()) << pod8;
  EXPECT_EQ(pod8.at("batch"), 8);
  EXPECT_TRUE(pod8.at("time_vs_dense").is_null()) << pod8;

  const auto dense_max = row(4, "tg2 @ d512 x max batch", "dense"), pod_max = row(5, "tg2 @ d512 x max batch", "pod");
  EXPECT_EQ(dense_max.at("batch").get<int>(), admitted);  // admitted until the cache refused, as for batch 8
  EXPECT_GT(pod_max.at("batch").get<int>(), 8) << pod_max;
  EXPECT_GT(pod_max.at("tokens_per_s").get<double>(), 0.0) << pod_max;
}

TEST_F(CliKv, InfoReportsSelectionPolicies) {
  const CliResult r = run({"info", "-m", kGqaModel.string(), "--kv", "h2o", "--sink", "4", "--recent", "60", "--budget",
                           "100", "--context", "1000", "--memory", "1M", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const auto j = nlohmann::json::parse(r.out);
  // 2 layers x 2 KV heads x (K + V) x (4 + 60 + 100 tokens) x 16 dims x 4 bytes... head_dim from the config.
  const int64_t dense = j.at("dense_kv_bytes_per_sequence");
  EXPECT_EQ(j.at("kv_bytes_per_sequence").get<int64_t>() * 1000, dense * 164);
  EXPECT_EQ(j.at("max_batch").get<int64_t>(), (1 << 20) / j.at("kv_bytes_per_sequence").get<int64_t>());
}

TEST_F(CliKv, BadInput) {
  const std::string m = kGqaModel.string();
  expect_error(run({"generate", "-m", m, "--ids", "1,2", "--kv", "nope"}), {"--kv", "nope", "h2o"});
  // A pod.json that does not fit the model: 3 KV heads for a 2-KV-head model; a layer it does not have.
  write_text(tmp_ / "heads.json", R"({"sink_tokens": 4, "recent_tokens": 8, "anchors": [[0], [0], [0]]})");
  expect_error(run({"generate", "-m", m, "--ids", "1,2", "--kv", "pod", "--pod-config", (tmp_ / "heads.json").string()}),
               {"heads.json"});
  write_text(tmp_ / "layer.json", R"({"sink_tokens": 4, "recent_tokens": 8, "anchors": [[0, 5], [0]]})");
  expect_error(run({"logits", "-m", m, "--ids", "1,2", "--out", (tmp_ / "x.safetensors").string(), "--kv",
                    "pod+snapkv", "--pod-config", (tmp_ / "layer.json").string()}),
               {"layer.json"});
  // A memory budget too small for one sequence's sink and window.
  expect_error(run({"info", "-m", m, "--kv", "streaming", "--context", "4096", "--memory", "1K"}),
               {"--memory", "sink and recent window"});
  expect_error(run({"generate", "-m", m, "--ids", "1,2", "--kv", "h2o", "--budget", "-3"}), {"--budget"});
  expect_error(run({"generate", "-m", m, "--ids", "1,2", "--kv", "snapkv", "--pool", "4"}), {"--pool"});
  expect_error(run({"generate", "-m", m, "--ids", "1,2", "--kv", "streaming", "--recent", "0"}), {"--recent"});
  expect_error(run({"memory", "-m", m, "--kv", "dense,pod:group=0"}), {"--kv", "group"});
  expect_error(run({"memory", "-m", m, "--kv", "streaming:budget=3"}), {"--kv", "budget"});
  expect_error(run({"memory", "-m", m, "--contexts", "0"}), {"--contexts"});
  expect_error(run({"memory", "-m", m, "--measure", "--kv", "dense", "--contexts", "5000", "--memory", "1M"}),
               {"--contexts", "context"});
  // Values that used to be ignored, cut off or accepted (found in review).
  expect_error(run({"generate", "-m", m, "--ids", "1,2", "--kv", "pod", "--pod-group", "2", "--tau", "nan"}), {"--tau"});
  expect_error(run({"generate", "-m", m, "--ids", "1,2", "--kv", "pod", "--pod-group", "-2"}), {"--pod-group"});
  expect_error(run({"generate", "-m", m, "--ids", "1,2", "--kv", "pod", "--pod-group", "2", "--sink", "3000000000"}),
               {"--sink"});
  expect_error(run({"generate", "-m", m, "--ids", "x"}), {"--ids"});
  expect_error(run({"generate", "-m", m, "-n", "abc"}), {"n-predict"});  // a usage error exits 1 too
  expect_error(run({"memory", "-m", m, "--memory", "0"}), {"--memory"});
  expect_error(run({"memory", "-m", m, "--memory", "1e30"}), {"--memory"});
  expect_error(run({"memory", "-m", m, "--measure", "--contexts", "64"}), {"--memory", "--measure"});
  expect_error(run({"memory", "-m", m, "--kv", "pod:tau=0.5x:group=1"}), {"--kv", "tau"});
}

TEST_F(CliKv, OtherCommandsBadInput) {
  const std::string ref = (kSourceDir / "models" / "podkv-ref").string();
  std::string text;
  for (int i = 0; i < 400; ++i) text += "Line " + std::to_string(i) + " of a text that is long enough to read.\n";
  write_text(tmp_ / "text.txt", text);
  const std::string data = (tmp_ / "text.txt").string();
  expect_error(run({"eval", "-m", ref, "--task", "agreement", "--kv", "dense", "--data", tmp_.string(), "-c", "64",
                    "--out", (tmp_ / "ev").string()}),
               {"--data", "directory"});
  expect_error(run({"eval", "-m", ref, "--task", "agreement", "--kv", "dense", "--data", data, "-c", "64", "--prefill",
                    "-5", "--out", (tmp_ / "ev").string()}),
               {"--prefill"});
  expect_error(run({"analyze", "-m", ref, "--calib", data, "--seq-len", "64", "--sink", "4", "--recent", "8",
                    "--last-queries", "8", "--out", (tmp_ / "missing" / "pod.json").string()}),
               {"--out", "folder"});
  expect_error(run({"train", "--preset", "tiny", "--tokenizer", ref, "--data", data, "--seq-len", "32", "--steps", "1",
                    "--out", (tmp_ / "tr").string(), "--beta1", "1"}),
               {"--beta1"});
  expect_error(run({"train", "--preset", "tiny", "--tokenizer", ref, "--data", data, "--seq-len", "32", "--steps", "1",
                    "--out", (tmp_ / "tr").string(), "--init-std", "-1"}),
               {"--init-std"});
}

}  // namespace
}  // namespace podkv::clitest
