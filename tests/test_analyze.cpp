// podkv analyze (offline layer grouping from real attention):
// - the similarities equal a slow, plain computation from attention matrices
//   of a plain double-precision forward pass, on the HF-made fixture models;
// - a model whose layer l+1 repeats layer l's attention (l's output
//   projections zeroed, l+1's q/k copied) gets one block {l, l+1}, and no other;
// - the pod.json it writes loads in the PoD cache and runs (same logits as
//   dense, since the merged layers have identical keys), also via the CLI;
// - resuming a stopped run gives exactly the uninterrupted result;
// - bad input gives one clear line and exit 1.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "cli_run.h"
#include "engine/runner.h"
#include "io/safetensors.h"
#include "kv/kv_cache.h"
#include "kv/pod_config.h"
#include "model/create.h"
#include "model/model.h"
#include "plot/plot.h"
#include "pod/analyze.h"
#include "policy/policies.h"
#include "similarity_test_util.h"
#include "tokenizer/tokenizer.h"

namespace podkv {
namespace {

namespace fs = std::filesystem;
using clitest::CliTest;
using json = nlohmann::json;
using testing::expect_similarity_near;
using testing::Similarity;

// ---------------------------------------------------------------- plain reference

// y[rows] = W x for an F32 weight matrix, in double.
std::vector<double> matvec(const WeightMatrix& w, const std::vector<double>& x) {
  EXPECT_EQ(w.dtype, DType::F32);
  const float* data = static_cast<const float*>(w.data);
  std::vector<double> y(w.rows, 0.0);
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t c = 0; c < w.cols; ++c) y[r] += static_cast<double>(data[r * w.cols + c]) * x[c];
  return y;
}

std::vector<double> rms_norm_double(const std::vector<double>& x, const std::vector<float>& weight, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v;
  const double scale = 1.0 / std::sqrt(ms / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * weight[i];
  return y;
}

// Hugging Face RoPE (rotate halves), default frequencies theta^(-2i/d).
void rope(std::vector<double>& v, int heads, int d, int pos, double theta) {
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < d / 2; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / d);
      double& a = v[h * d + i];
      double& b = v[h * d + i + d / 2];
      const double a0 = a, b0 = b;
      a = a0 * std::cos(angle) - b0 * std::sin(angle);
      b = b0 * std::cos(angle) + a0 * std::sin(angle);
    }
}

// attention[layer][head][s][j]: the softmax of query T-q+s over keys j <= t
// (zeros after), from a plain forward pass of the whole sequence in double.
using Attention = std::vector<std::vector<std::vector<std::vector<double>>>>;

Attention reference_attention_rows(const Model& model, const std::vector<int32_t>& tokens, int q) {
  const ModelConfig& c = model.config();
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
  const int T = static_cast<int>(tokens.size()), H = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim;
  const int group = H / Hkv;
  const float* embedding = static_cast<const float*>(model.embedding().data);
  std::vector<std::vector<double>> x(T, std::vector<double>(c.hidden_size));
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < c.hidden_size; ++i) x[t][i] = embedding[static_cast<size_t>(tokens[t]) * c.hidden_size + i];
  Attention rows(c.num_layers, std::vector<std::vector<std::vector<double>>>(
                                   H, std::vector<std::vector<double>>(q, std::vector<double>(T, 0.0))));
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = model.layers()[l];
    std::vector<std::vector<double>> Q(T), K(T), V(T);
    for (int t = 0; t < T; ++t) {
      const std::vector<double> xn = rms_norm_double(x[t], w.attn_norm, c.rms_norm_eps);
      Q[t] = matvec(w.wq, xn);
      K[t] = matvec(w.wk, xn);
      V[t] = matvec(w.wv, xn);
      rope(Q[t], H, d, t, c.rope_theta);
      rope(K[t], Hkv, d, t, c.rope_theta);
    }
    for (int t = 0; t < T; ++t) {
      std::vector<double> o(static_cast<size_t>(H) * d, 0.0);
      for (int i = 0; i < H; ++i) {
        const int h = i / group;
        std::vector<double> p(t + 1);
        double m = -INFINITY, total = 0;
        for (int j = 0; j <= t; ++j) {
          double s = 0;
          for (int k = 0; k < d; ++k) s += Q[t][i * d + k] * K[j][h * d + k];
          p[j] = s / std::sqrt(static_cast<double>(d));
          m = std::max(m, p[j]);
        }
        for (double& v : p) total += (v = std::exp(v - m));
        for (double& v : p) v /= total;
        for (int j = 0; j <= t; ++j)
          for (int k = 0; k < d; ++k) o[i * d + k] += p[j] * V[j][h * d + k];
        if (t >= T - q) std::copy(p.begin(), p.end(), rows[l][i][t - (T - q)].begin());
      }
      const std::vector<double> attn_out = matvec(w.wo, o);
      for (int i = 0; i < c.hidden_size; ++i) x[t][i] += attn_out[i];
      const std::vector<double> xn = rms_norm_double(x[t], w.mlp_norm, c.rms_norm_eps);
      const std::vector<double> gate = matvec(w.w_gate, xn), up = matvec(w.w_up, xn);
      std::vector<double> act(gate.size());
      for (size_t i = 0; i < act.size(); ++i) act[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      const std::vector<double> down = matvec(w.w_down, act);
      for (int i = 0; i < c.hidden_size; ++i) x[t][i] += down[i];
    }
  }
  return rows;
}

// JS divergence in bits, the textbook way.
double plain_js(const std::vector<double>& p, const std::vector<double>& q) {
  double js = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double m = (p[i] + q[i]) / 2;
    if (p[i] > 0) js += 0.5 * p[i] * std::log2(p[i] / m);
    if (q[i] > 0) js += 0.5 * q[i] * std::log2(q[i] / m);
  }
  return js;
}

// Keys ns..t-nr of a row, renormalised (or the whole causal row for All).
std::vector<double> scope_of(const std::vector<double>& row, int t, const AnalyzeOptions& o) {
  std::vector<double> out;
  if (o.scope == SimilarityScope::All) {
    out.assign(row.begin(), row.begin() + t + 1);
  } else {
    for (int j = o.sink_tokens; j <= t - o.recent_tokens; ++j) out.push_back(row[j]);
    const double mass = std::accumulate(out.begin(), out.end(), 0.0);
    for (double& v : out) v /= mass;
  }
  return out;
}

// Mean of 1 - JS per KV head and layer pair over query heads, queries and sequences.
Similarity plain_similarity(const std::vector<Attention>& runs, const ModelConfig& c, const AnalyzeOptions& o) {
  const int L = c.num_layers, group = c.num_heads / c.num_kv_heads, T = o.seq_len, q = o.last_queries;
  Similarity sim(c.num_kv_heads, std::vector<std::vector<double>>(L, std::vector<double>(L, 1.0)));
  for (int h = 0; h < c.num_kv_heads; ++h)
    for (int x = 0; x < L; ++x)
      for (int y = x + 1; y < L; ++y) {
        double sum = 0;
        int count = 0;
        for (const Attention& a : runs)
          for (int i = h * group; i < (h + 1) * group; ++i)
            for (int s = 0; s < q; ++s) {
              const int t = T - q + s;
              sum += 1.0 - plain_js(scope_of(a[x][i][s], t, o), scope_of(a[y][i][s], t, o));
              ++count;
            }
        sim[h][x][y] = sim[h][y][x] = sum / count;
      }
  return sim;
}

std::vector<std::vector<int32_t>> test_sequences(int vocab, int n, int T) {
  return synthetic_calibration_ids(vocab, n, T, 1);
}

class AnalyzeMatchesPlainForward : public ::testing::TestWithParam<std::tuple<std::string, SimilarityScope>> {};

TEST_P(AnalyzeMatchesPlainForward, SimilarityAndAttentionRows) {
  const auto& [fixture, scope] = GetParam();
  auto model = Model::load((clitest::kFixtures / fixture).string());
  const ModelConfig& c = model->config();
  AnalyzeOptions o;
  o.samples = 2;
  o.seq_len = 48;
  o.last_queries = 6;
  o.sink_tokens = 3;
  o.recent_tokens = 10;
  o.scope = scope;
  o.chunk = 16;  // several prefill chunks before the observed queries
  const auto sequences = test_sequences(c.vocab_size, o.samples, o.seq_len);

  LayerSimilarityAnalysis analysis(*model, o);
  std::vector<Attention> reference;
  double max_row_error = 0;
  int hooked_layers = 0;
  const Attention* current = nullptr;
  analysis.set_attention_hook([&](int layer, const float* probs) {
    ++hooked_layers;
    for (int i = 0; i < c.num_heads; ++i)
      for (int s = 0; s < o.last_queries; ++s)
        for (int j = 0; j < o.seq_len; ++j)
          max_row_error = std::max(max_row_error,
                                   std::abs(probs[(static_cast<size_t>(i) * o.last_queries + s) * o.seq_len + j] -
                                            (*current)[layer][i][s][j]));
  });
  for (const auto& tokens : sequences) {
    reference.push_back(reference_attention_rows(*model, tokens, o.last_queries));
    current = &reference.back();
    analysis.add_sequence(tokens);
  }
  EXPECT_EQ(hooked_layers, o.samples * c.num_layers);
  EXPECT_LT(max_row_error, 2e-5) << "attention rows differ from the plain forward pass";
  const Similarity got = analysis.accumulator().mean_similarity();
  const Similarity want = plain_similarity(reference, c, o);
  expect_similarity_near(got, want, 2e-5);
  // The rows are not trivially equal across layers (the test would be vacuous).
  double min_sim = 1;
  for (const auto& m : want) min_sim = std::min(min_sim, m[0][1]);
  EXPECT_LT(min_sim, 0.9999);
  // run_analysis over the same sequences gives the same matrices.
  const AnalyzeResult result = run_analysis(*model, o, sequences, {});
  ASSERT_TRUE(result.complete);
  expect_similarity_near(result.similarity, got, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, AnalyzeMatchesPlainForward,
                         ::testing::Combine(::testing::Values("llama_gqa", "mistral", "llama_mqa_tied"),
                                            ::testing::Values(SimilarityScope::Distant, SimilarityScope::All)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + scope_name(std::get<1>(info.param));
                         });

// ---------------------------------------------------------------- a model with a repeated layer

// A random tiny Llama of `layers` layers in `dir` where layer `repeat` + 1
// repeats layer `repeat`'s attention: layer `repeat` writes nothing to the
// residual stream (attention output and MLP down projections zero), and layer
// `repeat` + 1 has its attention norm and q/k/v projections. Large weights
// make attention sharp, so unrelated layers attend to different tokens.
void make_repeated_layer_model(const fs::path& dir, int layers, int repeat, bool with_tokenizer) {
  int vocab = 256;
  if (with_tokenizer) vocab = load_tokenizer(clitest::kLlama3Tokenizer.string())->vocab_size();
  ModelConfig c = preset_config("tiny", vocab);
  c.num_layers = layers;
  c.max_position_embeddings = 1024;
  c.bos_token_id = with_tokenizer ? load_tokenizer(clitest::kLlama3Tokenizer.string())->bos_id() : 1;
  create_random_model(c, DType::F32, 7, 0.3, dir.string());
  const fs::path weights = dir / "model.safetensors";
  std::map<std::string, std::vector<uint8_t>> data;
  std::map<std::string, std::vector<int64_t>> shapes;
  {
    auto file = safetensors::File::open(weights.string());
    for (const auto& [name, t] : file.tensors()) {
      data[name].assign(t.data, t.data + t.nbytes);
      shapes[name] = t.shape;
    }
  }
  auto name = [](int l, const std::string& suffix) { return "model.layers." + std::to_string(l) + "." + suffix; };
  for (const char* zero : {"self_attn.o_proj.weight", "mlp.down_proj.weight"}) {
    auto& bytes = data.at(name(repeat, zero));
    std::fill(bytes.begin(), bytes.end(), 0);
  }
  for (const char* copy : {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                           "self_attn.v_proj.weight"})
    data.at(name(repeat + 1, copy)) = data.at(name(repeat, copy));
  std::vector<safetensors::TensorToWrite> out;
  for (const auto& [n, bytes] : data) out.push_back({n, DType::F32, shapes[n], bytes.data(), bytes.size()});
  safetensors::write_file(weights.string(), out);
  if (with_tokenizer) fs::copy_file(clitest::kLlama3Tokenizer, dir / "tokenizer.json", fs::copy_options::overwrite_existing);
}

class AnalyzeModelTest : public CliTest {};

TEST_F(AnalyzeModelTest, RepeatedLayerIsOneBlockAndThePodConfigRuns) {
  const fs::path dir = tmp_ / "repeat";
  make_repeated_layer_model(dir, 6, 2, false);
  auto model = Model::load(dir.string());
  const ModelConfig& c = model->config();
  AnalyzeOptions o;
  o.samples = 3;
  o.seq_len = 96;
  o.last_queries = 8;
  o.sink_tokens = 4;
  o.recent_tokens = 16;
  const AnalyzeResult result = run_analysis(*model, o, test_sequences(c.vocab_size, o.samples, o.seq_len), {});
  ASSERT_TRUE(result.complete);
  for (int h = 0; h < c.num_kv_heads; ++h) {
    EXPECT_NEAR(result.similarity[h][2][3], 1.0, 1e-6) << "KV head " << h;
    for (int x = 0; x < c.num_layers; ++x)
      for (int y = x + 1; y < c.num_layers; ++y)
        if (!(x == 2 && y == 3)) {
          EXPECT_LT(result.similarity[h][x][y], 0.5) << "head " << h << " " << x << "," << y;
        }
    EXPECT_EQ(result.pod.anchors[h], (std::vector<int>{0, 1, 2, 4, 5})) << "KV head " << h;
  }

  // The pod.json loads into the PoD cache, and its logits equal dense ones:
  // layer 3 reads layer 2's distant keys, which equal its own.
  const fs::path pod_path = tmp_ / "pod.json";
  save_pod_config(pod_path.string(), result.pod);
  const PodConfig loaded = load_pod_config(pod_path.string(), c.num_layers, c.num_kv_heads);
  EXPECT_EQ(loaded.anchors, result.pod.anchors);
  EXPECT_EQ(loaded.extra["analysis"]["seq_len"], 96);
  const KvLayout pod_layout = pod_kv_layout(c, loaded);
  const KvLayout dense_layout = KvLayout::dense(c.num_layers, c.num_kv_heads, c.head_dim);
  const std::vector<int32_t> tokens = test_sequences(c.vocab_size, 1, 200)[0];
  auto logits_with = [&](const KvLayout& layout) {
    KvCache cache(layout, static_cast<size_t>(64) << 20, 16);
    Runner runner(*model, cache);
    runner.set_chunk_size(64);
    const int seq = cache.add_sequence();
    std::vector<float> logits;
    runner.forward(seq, tokens, false, logits);
    return std::make_pair(logits, cache.bytes_in_use(seq));
  };
  const auto [pod_logits, pod_bytes] = logits_with(pod_layout);
  const auto [dense_logits, dense_bytes] = logits_with(dense_layout);
  ASSERT_EQ(pod_logits.size(), dense_logits.size());
  for (size_t i = 0; i < pod_logits.size(); ++i) EXPECT_NEAR(pod_logits[i], dense_logits[i], 1e-4) << i;
  EXPECT_LT(pod_bytes, dense_bytes);
  EXPECT_GT(pod_kv_saving(c, loaded, 200), 0.0);
}

TEST_F(AnalyzeModelTest, ResumeGivesTheUninterruptedResult) {
  const fs::path dir = tmp_ / "m";
  make_repeated_layer_model(dir, 4, 1, false);
  auto model = Model::load(dir.string());
  AnalyzeOptions o;
  o.samples = 3;
  o.seq_len = 64;
  o.last_queries = 4;
  o.sink_tokens = 2;
  o.recent_tokens = 8;
  const auto sequences = test_sequences(model->config().vocab_size, o.samples, o.seq_len);
  const AnalyzeResult whole = run_analysis(*model, o, sequences, {});

  AnalyzeRunOptions run;
  run.state_path = (tmp_ / "state.json").string();
  run.max_new_sequences = 1;
  std::vector<AnalyzeProgress> seen;
  run.progress = [&](const AnalyzeProgress& p) { seen.push_back(p); };
  AnalyzeResult part = run_analysis(*model, o, sequences, run);
  EXPECT_FALSE(part.complete);
  EXPECT_EQ(part.sequences, 1);
  ASSERT_TRUE(fs::exists(run.state_path));
  // At the start and after the sequence (plus reports within it when it is slow).
  EXPECT_EQ(std::count_if(seen.begin(), seen.end(), [](const AnalyzeProgress& p) { return p.running == 0; }), 2);
  for (const AnalyzeProgress& p : seen) EXPECT_TRUE(p.running >= 0 && p.running < 1) << p.running;
  EXPECT_EQ(seen.front().done, 0);
  EXPECT_EQ(seen.back().done, 1);
  EXPECT_EQ(seen.back().total, 3);

  // Other settings: a clear error naming the setting and the file.
  AnalyzeOptions other = o;
  other.last_queries = 5;
  try {
    run_analysis(*model, other, sequences, run);
    ADD_FAILURE() << "resumed with other settings";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("last_queries"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("state.json"), std::string::npos) << e.what();
  }
  auto other_tokens = sequences;
  other_tokens[2][5] ^= 1;
  EXPECT_THROW(run_analysis(*model, o, other_tokens, run), Error);

  run.max_new_sequences = -1;
  seen.clear();
  const AnalyzeResult rest = run_analysis(*model, o, sequences, run);
  ASSERT_TRUE(rest.complete);
  EXPECT_EQ(rest.resumed_sequences, 1);
  EXPECT_EQ(seen.front().done, 1);
  EXPECT_EQ(rest.similarity, whole.similarity);  // bit for bit
  EXPECT_EQ(rest.pod.anchors, whole.pod.anchors);

  // --fresh: the state is discarded and everything runs again.
  run.discard_state = true;
  const AnalyzeResult again = run_analysis(*model, o, sequences, run);
  EXPECT_EQ(again.resumed_sequences, 0);
  EXPECT_EQ(again.similarity, whole.similarity);
}

// ---------------------------------------------------------------- calibration text

TEST(AnalyzeCalibration, CutsEvenlyWithBos) {
  auto tokenizer = load_tokenizer(clitest::kLlama3Tokenizer.string());
  const std::string text = synthetic_calibration_text(12000);  // < 32 bytes per needed token: tokenized whole
  EXPECT_GE(text.size(), 12000u);
  EXPECT_EQ(text, synthetic_calibration_text(12000));  // deterministic
  const std::vector<int32_t> all = tokenizer->encode(text, false);
  const std::vector<int32_t> bos = tokenizer->encode("", true);
  // Short text: tokenized whole, non-overlapping windows spread over it.
  const auto seqs = cut_calibration_sequences(text, *tokenizer, 3, 200, "text");
  ASSERT_EQ(seqs.size(), 3u);
  for (const auto& s : seqs) {
    ASSERT_EQ(s.size(), 200u);
    EXPECT_TRUE(std::equal(bos.begin(), bos.end(), s.begin()));
  }
  EXPECT_TRUE(std::equal(seqs[0].begin() + bos.size(), seqs[0].end(), all.begin()));
  const size_t body = 200 - bos.size(), stride = (all.size() - body) / 2;
  EXPECT_GE(stride, body);
  EXPECT_TRUE(std::equal(seqs[2].begin() + bos.size(), seqs[2].end(), all.begin() + 2 * stride));
  // Too few tokens for all: as many as fit; for none: an error naming the source.
  const size_t fit = all.size() / (200 - bos.size());
  EXPECT_EQ(cut_calibration_sequences(text, *tokenizer, 1000, 200, "text").size(), fit);
  try {
    cut_calibration_sequences("a few words", *tokenizer, 2, 200, "short.txt");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("short.txt"), std::string::npos) << e.what();
  }
  // Long text: sampled at evenly spaced line starts, each sample a real piece of it.
  const std::string long_text = synthetic_calibration_text(400000);
  const auto sampled = cut_calibration_sequences(long_text, *tokenizer, 4, 64, "long");
  ASSERT_EQ(sampled.size(), 4u);
  EXPECT_NE(sampled[0], sampled[3]);
  for (const auto& s : sampled) {
    const std::string piece = tokenizer->decode(std::vector<int32_t>(s.begin() + bos.size(), s.end()));
    EXPECT_NE(long_text.find(piece), std::string::npos) << piece;
  }
}

TEST(AnalyzeOptionsCheck, ClearErrors) {
  ModelConfig c = preset_config("tiny", 256);
  AnalyzeOptions o;
  o.seq_len = 300;
  auto message = [&](const AnalyzeOptions& options, const ModelConfig& config) -> std::string {
    try {
      validate_analyze_options(options, config, "M");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(message(o, c).find("--seq-len 300 is shorter than --sink 16 + --recent 256 + --last-queries 32"), 0u)
      << message(o, c);
  o.scope = SimilarityScope::All;
  EXPECT_EQ(message(o, c), "");
  o.seq_len = 5000;
  EXPECT_NE(message(o, c).find("max_position_embeddings"), std::string::npos);
  o.seq_len = 1024;
  o.delta = 1.5;
  EXPECT_NE(message(o, c).find("--delta"), std::string::npos);
  o.delta = 0.5;
  c.num_layers = 1;
  EXPECT_NE(message(o, c).find("M: 1 attention layer(s)"), std::string::npos) << message(o, c);
  EXPECT_THROW(parse_scope("near"), Error);
}

// ---------------------------------------------------------------- the command

TEST_F(AnalyzeModelTest, CommandWritesOutputsAndGenerateUsesThem) {
  const fs::path dir = tmp_ / "model";
  make_repeated_layer_model(dir, 5, 3, true);
  const fs::path out = tmp_ / "out" / "pod.json";
  fs::create_directories(out.parent_path());
  const std::vector<std::string> args = {"analyze", "-m", dir.string(), "--samples", "3", "--seq-len", "96",
                                         "--last-queries", "8", "--sink", "4", "--recent", "16",
                                         "--out", out.string(), "--context", "1024", "-t", "2"};
  auto stopped_args = args;
  stopped_args.insert(stopped_args.end(), {"--stop-after", "2"});
  const auto stopped = run(stopped_args);
  ASSERT_EQ(stopped.exit_code, 0) << stopped;
  EXPECT_NE(stopped.err.find("stopped after 2 of 3"), std::string::npos) << stopped;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fs::exists(tmp_ / "out" / "pod.partial.json"));

  auto json_args = args;
  json_args.push_back("--json");
  const auto r = run(json_args);
  ASSERT_EQ(r.exit_code, 0) << r;
  const json summary = json::parse(r.out);
  EXPECT_EQ(summary["resumed_sequences"], 2);
  EXPECT_EQ(summary["sequences"], 3);
  EXPECT_NE(summary["calibration"].get<std::string>().find("built-in synthetic text"), std::string::npos);
  for (const auto& anchors : summary["anchors"]) EXPECT_EQ(anchors, json::parse("[0, 1, 2, 3]"));
  EXPECT_EQ(summary["blocks_per_head"], json::parse("[4, 4]"));
  EXPECT_GT(summary["kv_saving"].get<double>(), 0.0);
  EXPECT_FALSE(fs::exists(tmp_ / "out" / "pod.partial.json"));

  const json sim = json::parse(clitest::read_text(tmp_ / "out" / "pod.similarity.json"));
  ASSERT_EQ(sim["similarity"].size(), 2u);
  EXPECT_EQ(sim["similarity"][0].size(), 5u);
  EXPECT_NEAR(sim["similarity"][1][3][4].get<double>(), 1.0, 1e-6);
  EXPECT_EQ(sim["seq_len"], 96);
  EXPECT_EQ(sim["scope"], "distant");
  EXPECT_EQ(fs::exists(tmp_ / "out" / "pod.similarity.png"), plot::png_available());

  const auto g = run({"generate", "-m", dir.string(), "--kv", "pod", "--pod-config", out.string(), "--ids",
                      "1,5,9,200,7,3,3,8,1,2,99,41", "-n", "4", "--json"});
  ASSERT_EQ(g.exit_code, 0) << g;
  EXPECT_EQ(json::parse(g.out)["kv_policy"], "pod");

  // The human summary names blocks per head and the saving.
  const auto text = run({"analyze", "-m", dir.string(), "--samples", "1", "--seq-len", "64", "--last-queries", "4",
                         "--sink", "2", "--recent", "8", "--out", (tmp_ / "out" / "b.json").string(), "--no-png"});
  ASSERT_EQ(text.exit_code, 0) << text;
  EXPECT_NE(text.out.find("KV head 0: "), std::string::npos) << text;
  EXPECT_NE(text.out.find("expected KV saving at 1024 tokens"), std::string::npos) << text;
}

TEST_F(AnalyzeModelTest, CommandBadInput) {
  const fs::path dir = tmp_ / "model";
  make_repeated_layer_model(dir, 3, 0, true);
  const fs::path out = tmp_ / "pod.json";
  auto expect_one_line_error = [&](const std::vector<std::string>& args, const std::string& needle) {
    const auto r = run(args);
    EXPECT_EQ(r.exit_code, 1) << r;
    EXPECT_EQ(r.err.find("error: "), 0u) << r;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r;
    EXPECT_FALSE(fs::exists(out));
  };
  const fs::path short_text = tmp_ / "short.txt";
  clitest::write_text(short_text, "Only a few words of text.\n");
  expect_one_line_error({"analyze", "-m", dir.string(), "--calib", short_text.string(), "--seq-len", "128",
                         "--recent", "16", "--out", out.string()},
                        "short.txt");
  expect_one_line_error({"analyze", "-m", dir.string(), "--calib", (tmp_ / "missing.txt").string(), "--out",
                         out.string()},
                        "missing.txt");
  expect_one_line_error({"analyze", "-m", dir.string(), "--seq-len", "100", "--sink", "16", "--recent", "64",
                         "--last-queries", "32", "--out", out.string()},
                        "--seq-len 100 is shorter than --sink 16 + --recent 64 + --last-queries 32");
  expect_one_line_error({"analyze", "-m", dir.string(), "--scope", "near", "--out", out.string()}, "--scope");

  // A model with one attention layer: nothing to group.
  const fs::path one = tmp_ / "one";
  ModelConfig c = preset_config("tiny", 64);
  c.num_layers = 1;
  create_random_model(c, DType::F32, 1, 0.02, one.string());
  expect_one_line_error({"analyze", "-m", one.string(), "--out", out.string()}, "1 attention layer(s)");
  // A model without a tokenizer cannot read calibration text.
  const fs::path no_tokenizer = tmp_ / "no_tokenizer";
  make_repeated_layer_model(no_tokenizer, 2, 0, false);
  clitest::write_text(tmp_ / "long.txt", synthetic_calibration_text(10000));
  expect_one_line_error({"analyze", "-m", no_tokenizer.string(), "--calib", (tmp_ / "long.txt").string(), "--out",
                         out.string()},
                        "no tokenizer");
}

// WikiText-2 through the command, when ../shared/data is there.
TEST_F(AnalyzeModelTest, WikiTextCalibration) {
  const fs::path wiki = fs::path(PODKV_SOURCE_DIR) / ".." / "shared" / "data" / "text" / "wikitext-2-raw-test.txt";
  if (!fs::exists(wiki)) GTEST_SKIP() << wiki << " is absent";
  const fs::path dir = tmp_ / "model";
  make_repeated_layer_model(dir, 4, 1, true);
  const auto r = run({"analyze", "-m", dir.string(), "--calib", wiki.string(), "--samples", "2", "--seq-len", "128",
                      "--last-queries", "8", "--sink", "4", "--recent", "32", "--out", (tmp_ / "pod.json").string(),
                      "--no-png", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json summary = json::parse(r.out);
  EXPECT_EQ(summary["calibration"], "wikitext-2-raw-test.txt");
  EXPECT_EQ(summary["sequences"], 2);
  for (const auto& anchors : summary["anchors"]) EXPECT_EQ(anchors, json::parse("[0, 1, 3]"));
}

}  // namespace
}  // namespace podkv
