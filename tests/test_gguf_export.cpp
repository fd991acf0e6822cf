// GGUF export: a fixture model written by export_gguf and read back by
// Model::load must give the logits of the safetensors model it came from.
// Tolerances, relative = max|Δ| / max|ref|:
//  - keep (and bf16 → f32/f16/bf16): 1e-5; only the order of additions in q·k
//    changes with the Q/K row permutation (measured ≤ 2e-6).
//  - Q8_0: 0.2 relative, 8e-2 RMS-relative, argmax agreeing on ≥ 85% of
//    positions. Measured 0.06-0.14 relative, 0.040-0.056 RMS, 91-95% argmax.
//    That is the weights' own rounding, not a bug: the logits of a dequantised
//    (f32) re-export are identical, and these random fixtures (weights N(0,
//    0.15-0.2)) amplify weight noise ~13x: bf16 rounding (0.11% per weight)
//    already moves them 1.2-2.0% RMS, and Q8_0's per-weight error is ~4x bf16's.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "convert/gguf_export.h"
#include "engine/generate.h"
#include "engine/runner.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "tokenizer/pretokenize.h"
#include "fixture_models.h"
#include "logit_compare.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace podkv {
namespace {

namespace fs = std::filesystem;

const fs::path kTinyGguf = fs::path(PODKV_SOURCE_DIR) / ".." / "shared" / "data" / "models" / "llama-2-tiny-random.gguf";

// A fresh directory under the system temp dir, removed with the object.
struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& ch : name) if (ch == '/') ch = '_';
    path = fs::temp_directory_path() / ("podkv_gguf_export_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<int32_t> fixture_ids(const fs::path& dir) { return testutil::fixture_input_ids(dir); }
std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids) { return testutil::prompt_logits(m, ids); }

double relative_error(const std::vector<float>& a, const std::vector<float>& ref) {
  EXPECT_EQ(a.size(), ref.size());
  return testutil::relative_error(a.data(), ref.data(), std::min(a.size(), ref.size()));
}

// sqrt(mean Δ²) / sqrt(mean ref²): the typical error, less dominated by one outlier than relative_error.
double rms_relative_error(const std::vector<float>& a, const std::vector<float>& ref) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff += (static_cast<double>(a[i]) - ref[i]) * (static_cast<double>(a[i]) - ref[i]);
    norm += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(diff / norm);
}

// Fraction of positions whose argmax token agrees.
double argmax_agreement(const std::vector<float>& a, const std::vector<float>& ref, int vocab) {
  const size_t n = ref.size() / vocab;
  size_t same = 0;
  for (size_t t = 0; t < n; ++t) {
    auto arg = [&](const std::vector<float>& v) { return std::max_element(v.begin() + t * vocab, v.begin() + (t + 1) * vocab) - v.begin(); };
    same += arg(a) == arg(ref);
  }
  return static_cast<double>(same) / n;
}

int run_cli(const std::string& args) {
  const int status = std::system((std::string(PODKV_CLI_PATH) + " " + args + " >/dev/null 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class GgufExportFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufExportFixture, KeepTypeLogitsMatchSafetensors) {
  const fs::path dir = testutil::kFixtureModels / GetParam();
  ASSERT_TRUE(fs::exists(dir)) << dir << " is missing (a committed fixture)";
  TempDir tmp;
  const std::string out = (tmp.path / "model.gguf").string();
  auto hf = Model::load(dir.string());
  export_gguf(*hf, out, {});
  auto gg = Model::load(out);
  EXPECT_EQ(gg->weight_dtype(), hf->weight_dtype());
  EXPECT_EQ(gg->config().tie_word_embeddings, hf->config().tie_word_embeddings);
  // Only llama3 scaling needs per-frequency divisors; linear scaling is metadata.
  EXPECT_EQ(gguf::File::open(out).tensor("rope_freqs.weight") != nullptr, GetParam() == "llama3_rope");
  EXPECT_EQ(gg->config().rope_scaling.type == RopeScalingType::Linear, GetParam() == "llama_linear_rope");
  const auto ids = fixture_ids(dir);
  const auto ref = logits_of(*hf, ids);
  const double err = relative_error(logits_of(*gg, ids), ref);
  std::printf("[ gguf keep ] %-18s rel err %.3g\n", GetParam().c_str(), err);
  EXPECT_LT(err, 1e-5) << GetParam();

  // Read back and written again (already permuted, rope_freqs carried over): same logits.
  const std::string again = (tmp.path / "again.gguf").string();
  export_gguf(*gg, again, {});
  EXPECT_LT(relative_error(logits_of(*Model::load(again), ids), ref), 1e-5) << GetParam() << " re-export";
}

TEST_P(GgufExportFixture, Q8_0LogitsCloseAndArgmaxAgrees) {
  const fs::path dir = testutil::kFixtureModels / GetParam();
  ASSERT_TRUE(fs::exists(dir)) << dir << " is missing (a committed fixture)";
  TempDir tmp;
  const std::string out = (tmp.path / "model.gguf").string();
  auto hf = Model::load(dir.string());
  GgufExportOptions opts;
  opts.type = GgufExportType::Q8_0;
  export_gguf(*hf, out, opts);
  auto gg = Model::load(out);
  EXPECT_EQ(gg->weight_dtype(), DType::Q8_0);
  EXPECT_EQ(gguf::File::open(out).tensor("output_norm.weight")->type, gguf::TensorType::F32);
  const auto ids = fixture_ids(dir);
  const auto ref = logits_of(*hf, ids);
  const auto got = logits_of(*gg, ids);
  const double err = relative_error(got, ref);
  const double agree = argmax_agreement(got, ref, hf->config().vocab_size);
  const double rms = rms_relative_error(got, ref);
  std::printf("[ gguf q8_0 ] %-18s rel err %.3g, rms rel err %.3g, argmax agreement %.3f\n", GetParam().c_str(), err, rms, agree);
  EXPECT_LT(err, 0.2) << GetParam();
  EXPECT_LT(rms, 8e-2) << GetParam();
  EXPECT_GE(agree, 0.85) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(GgufExport, GgufExportFixture,
                         ::testing::Values("llama_gqa", "llama_mqa_tied", "llama_head_dim", "llama3_rope",
                                           "llama_linear_rope", "llama_bf16", "llama_f16", "llama_sharded", "mistral",
                                           "qwen2_bias", "qwen3_qk_norm", "qwen2_yarn"),
                         [](const auto& info) { return info.param; });

TEST(GgufExport, FloatTypesConvert) {
  // bf16 weights widen exactly to f32 and (being small) to f16: 1e-5. f32
  // weights rounded to f16 / bf16: measured 2.5e-3 / 2.7e-2 on llama_gqa.
  const std::vector<std::tuple<std::string, GgufExportType, double>> cases = {
      {"llama_bf16", GgufExportType::F32, 1e-5}, {"llama_bf16", GgufExportType::F16, 1e-5},
      {"llama_bf16", GgufExportType::BF16, 1e-5}, {"llama_gqa", GgufExportType::F16, 1e-2},
      {"llama_gqa", GgufExportType::BF16, 6e-2}};
  TempDir tmp;
  for (const auto& [fixture, type, tol] : cases) {
    const fs::path dir = testutil::kFixtureModels / fixture;
    if (!fs::exists(dir)) continue;
    auto hf = Model::load(dir.string());
    const auto ids = fixture_ids(dir);
    const std::string out = (tmp.path / "m.gguf").string();
    GgufExportOptions opts;
    opts.type = type;
    export_gguf(*hf, out, opts);
    auto gg = Model::load(out);
    const double err = relative_error(logits_of(*gg, ids), logits_of(*hf, ids));
    std::printf("[ gguf %s -> %s ] rel err %.3g\n", fixture.c_str(), dtype_name(gg->weight_dtype()), err);
    EXPECT_LT(err, tol) << fixture << " -> " << dtype_name(gg->weight_dtype());
  }
}

// Qwen2 (q/k/v biases) and Qwen3 (per-head q/k norms) are written as llama.cpp's qwen2 and qwen3
// architectures: their keys under the architecture's name, the extra tensors, and Q/K rows as
// Hugging Face keeps them (llama.cpp's NEOX RoPE rotates halves; only llama's rows are permuted).
TEST(GgufExport, QwenArchitectures) {
  for (const char* name : {"qwen2_bias", "qwen3_qk_norm"}) {
    const fs::path dir = testutil::kFixtureModels / name;
    ASSERT_TRUE(fs::exists(dir)) << dir << " (a committed fixture) is missing";
    TempDir tmp;
    auto m = Model::load(dir.string());
    const std::string out = (tmp.path / "q.gguf").string();
    export_gguf(*m, out, {});
    const gguf::File f = gguf::File::open(out);
    const bool qwen3 = std::string(name) == "qwen3_qk_norm";
    const std::string arch = qwen3 ? "qwen3" : "qwen2";
    EXPECT_EQ(f.get_string("general.architecture"), arch) << name;
    EXPECT_EQ(f.get_int(arch + ".block_count"), m->config().num_layers) << name;
    EXPECT_EQ(f.find("llama.block_count"), nullptr) << name;
    EXPECT_EQ(f.tensor("blk.0.attn_q.bias") != nullptr, !qwen3) << name;
    EXPECT_EQ(f.tensor("blk.1.attn_k_norm.weight") != nullptr, qwen3) << name;
    // Q's rows unpermuted: the file's first row is the checkpoint's first row.
    const gguf::TensorInfo* q = f.tensor("blk.0.attn_q.weight");
    ASSERT_NE(q, nullptr);
    const WeightMatrix& wq = m->layers()[0].wq;
    std::vector<float> a(static_cast<size_t>(wq.cols)), b(a.size());
    to_f32(wq.dtype, static_cast<const uint8_t*>(wq.data) + wq.row_bytes(), a.data(), a.size());
    to_f32(gguf::to_dtype(q->type), static_cast<const uint8_t*>(q->data) + wq.row_bytes(), b.data(), b.size());
    EXPECT_EQ(a, b) << name << ": row 1 of attn_q moved";
    auto back = Model::load(out);
    EXPECT_EQ(back->config().architecture, m->config().architecture) << name;
    EXPECT_FALSE(back->config().rope_interleaved) << name;
  }
}

TEST(GgufExport, ParsesExportTypes) {
  EXPECT_THROW(parse_gguf_export_type("iq2_xxs", "--type"), Error);
  EXPECT_EQ(parse_gguf_export_type("iq4_xs", "--type"), GgufExportType::IQ4_XS);
  EXPECT_EQ(parse_gguf_export_type("q4_0", "--type"), GgufExportType::Q4_0);
  EXPECT_EQ(parse_gguf_export_type("q2_k", "--type"), GgufExportType::Q2_K);
  EXPECT_EQ(parse_gguf_export_type("q4_k", "--type"), GgufExportType::Q4_K_S);
}

// GPT-2's bytes_to_unicode: the printable character standing for byte b.
std::string byte_char(int b) {
  auto printable = [](int x) { return (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255); };
  int cp = b;
  if (!printable(b)) {
    cp = 256;
    for (int x = 0; x < b; ++x) cp += !printable(x);
  }
  std::string s;
  if (cp < 0x80) s += static_cast<char>(cp);
  else { s += static_cast<char>(0xC0 | (cp >> 6)); s += static_cast<char>(0x80 | (cp & 0x3F)); }
  return s;
}

// A byte-level BPE tokenizer.json of 512 ids in one of three styles: "gpt2" (ByteLevel's own regex),
// "llama3" (Llama 3's split, a BOS template) and "qwen2" (Qwen2's split, an NFC normalizer, no BOS).
nlohmann::json tiny_tokenizer_json(const std::string& style) {
  const bool llama3 = style == "llama3", split = style != "gpt2";
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"Ġ", "t"}, {"Ġt", "he"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}, {"o", "r"}, {"Ġw", "or"}};
  json merge_list = json::array();
  for (const auto& [a, b] : merges) {
    vocab[a + b] = static_cast<int>(vocab.size());
    merge_list.push_back(a + " " + b);
  }
  auto added = [](int id, const std::string& s) {
    return json{{"id", id}, {"content", s}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                {"normalized", false}, {"special", true}};
  };
  json j;
  j["version"] = "1.0";
  j["added_tokens"] = json::array({added(300, "<|bos|>"), added(301, "<|eos|>")});
  j["normalizer"] = nullptr;
  json bytelevel = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", !split}};
  if (style == "qwen2") j["normalizer"] = {{"type", "NFC"}};
  if (split)
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", json::array({json{{"type", "Split"},
                                                              {"pattern", {{"Regex", llama3 ? tok::kLlama3Pattern : tok::kQwen2JsonPattern}}},
                                                              {"behavior", "Isolated"}, {"invert", false}},
                                                         bytelevel})}};
  else
    j["pre_tokenizer"] = bytelevel;
  if (llama3) {
    j["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single", json::array({json{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                                                   json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                           {"pair", json::array()},
                           {"special_tokens", {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {300}}, {"tokens", {"<|bos|>"}}}}}}};
  } else {
    j["post_processor"] = bytelevel;
  }
  j["decoder"] = bytelevel;
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                {"ignore_merges", llama3}, {"vocab", vocab}, {"merges", merge_list}};
  return j;
}

TEST(GgufExport, EmbedsByteLevelBpeTokenizer) {
  const fs::path src = testutil::kFixtureModels / "llama_gqa";
  ASSERT_TRUE(fs::exists(src)) << src << " is missing (a committed fixture)";
  for (const std::string style : {"llama3", "gpt2", "qwen2"}) {
    TempDir tmp;
    const fs::path dir = tmp.path / "model";
    fs::create_directories(dir);
    for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src / f, dir / f);
    std::ofstream(dir / "tokenizer.json") << tiny_tokenizer_json(style).dump();
    const std::string out = (tmp.path / "m.gguf").string();
    const GgufExportResult r = export_gguf(*Model::load(dir.string()), out, {});
    ASSERT_TRUE(r.tokenizer_embedded) << r.tokenizer_note;
    auto hf_tok = load_tokenizer((dir / "tokenizer.json").string());
    auto gg_tok = load_tokenizer(out);
    EXPECT_EQ(gg_tok->vocab_size(), 512);
    EXPECT_EQ(gguf::File::open(out).get_string("tokenizer.ggml.pre"),
              style == "llama3" ? "llama-bpe" : style == "qwen2" ? "qwen2" : "gpt-2");
    for (const std::string text : {"hello world", " the hello<|eos|> world 123", "héllo\n\n  tor", "", "It's 2024'S"}) {
      const auto ids = hf_tok->encode(text, true);
      EXPECT_EQ(gg_tok->encode(text, true), ids) << style << ": " << text;
      EXPECT_EQ(gg_tok->decode(ids), hf_tok->decode(ids)) << text;
    }
  }
}

TEST(GgufExport, TinyLlamaGgufRunsAndGenerates) {
  if (!fs::exists(kTinyGguf)) GTEST_SKIP() << kTinyGguf << " absent";
  auto m = Model::load(kTinyGguf.string());
  std::vector<int32_t> ids = {1, 15043, 29892, 590};
  for (int32_t& id : ids) id %= m->config().vocab_size;
  const auto logits = logits_of(*m, ids);
  ASSERT_EQ(logits.size(), ids.size() * m->config().vocab_size);
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));

  const ModelConfig& c = m->config();
  KvCache cache(KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim), 64 * static_cast<size_t>(c.dense_kv_bytes_per_token(4)) * 2, 16);
  Runner runner(*m, cache);
  GenerateOptions options;
  options.max_new_tokens = 8;
  options.stop_at_eos = false;
  options.sampling.temperature = 0;
  const GenerateResult r = generate(runner, cache.add_sequence(), nullptr, ids, options);
  EXPECT_EQ(r.generated_ids.size(), 8u);

  // Converted by the CLI (Q8_0) and run through it, with the embedded SPM vocabulary.
  TempDir tmp;
  const std::string out = (tmp.path / "tiny-q8.gguf").string();
  EXPECT_EQ(run_cli("generate -m " + kTinyGguf.string() + " -p Hello -n 8"), 0);
  EXPECT_EQ(run_cli("convert -m " + kTinyGguf.string() + " --out " + out + " --type q8_0"), 0);
  EXPECT_EQ(run_cli("generate -m " + out + " -p Hello -n 8"), 0);
  auto q = Model::load(out);
  EXPECT_LT(relative_error(logits_of(*q, ids), logits), 5e-2);
}

}  // namespace
}  // namespace podkv
