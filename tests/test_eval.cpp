// podkv eval, the library: construction of each task's prompts (the needle is
// where the grid says), scoring (exact match, KL, top-1), perplexity equal to
// the NLL computed directly, dense and one-layer PoD agreeing exactly with
// dense, KV bytes equal to what a cache holds, the report and --resume store.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>

#include "engine/runner.h"
#include "eval/checkpoint.h"
#include "eval/report.h"
#include "eval/runner.h"
#include "eval/scoring.h"
#include "eval/tasks.h"
#include "kv/pod_config.h"
#include "model/create.h"
#include "plot/plot.h"
#include "policy/policies.h"
#include "policy/policy_spec.h"
#include "util/error.h"

namespace podkv::eval {
namespace {

namespace fs = std::filesystem;

const fs::path kTokenizer = fs::path(PODKV_SOURCE_DIR) / "tests/fixtures/tokenizers/bpe_llama3/tokenizer.json";

const Tokenizer& tokenizer() {
  static std::unique_ptr<Tokenizer> tok = load_tokenizer(kTokenizer.string());
  return *tok;
}

bool contains(const std::vector<int32_t>& hay, const std::vector<int32_t>& needle, int64_t at) {
  if (at < 0 || at + static_cast<int64_t>(needle.size()) > static_cast<int64_t>(hay.size())) return false;
  return std::equal(needle.begin(), needle.end(), hay.begin() + at);
}

std::string expect_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

// A text file of English-like sentences (no ../shared needed).
fs::path write_text_file(const fs::path& dir, int sentences) {
  fs::create_directories(dir);
  const fs::path p = dir / "text.txt";
  std::ofstream out(p);
  const char* words[] = {"river", "apple", "window", "garden", "silver", "morning", "letter", "mountain"};
  for (int i = 0; i < sentences; ++i)
    out << "The " << words[i % 8] << " near the " << words[(i * 3 + 1) % 8] << " was quiet on day " << i << ".\n";
  return p;
}

// The tiny random model with the BPE tokenizer (what quickstart builds), made once.
struct TinyModel {
  fs::path dir = fs::temp_directory_path() / ("podkv_eval_model_" + std::to_string(getpid()));
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  TinyModel() {
    ModelConfig c = preset_config("tiny", tokenizer().vocab_size());
    c.bos_token_id = tokenizer().bos_id();
    create_random_model(c, DType::F32, 1, 0.05, dir.string());
    fs::copy_file(kTokenizer, dir / "tokenizer.json", fs::copy_options::overwrite_existing);
    model = Model::load(dir.string());
    tok = load_tokenizer(dir.string());
  }
  ~TinyModel() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

const TinyModel& tiny() {
  static TinyModel m;
  return m;
}

EvalPolicy policy(const std::string& label, const KvPolicyOptions& o) {
  EvalPolicy p;
  p.label = label;
  p.layout = make_kv_layout(tiny().model->config(), o);
  p.options = {{"policy", o.policy}, {"label", label}};
  return p;
}

EvalPolicy pod_policy(int group, int sink, int recent) {
  const ModelConfig& c = tiny().model->config();
  KvPolicyOptions o;
  o.policy = "pod";
  o.pod = uniform_pod_config(c.num_layers, c.num_kv_heads, group, sink, recent);
  return policy("pod:group=" + std::to_string(group), o);
}

EvalPolicy streaming_policy(int sink, int recent) {
  KvPolicyOptions o;
  o.policy = "streaming";
  o.sink_tokens = sink;
  o.recent_tokens = recent;
  return policy("streaming", o);
}

EvalPolicy dense_policy() { return policy("dense", KvPolicyOptions{}); }

TEST(EvalScoring, ExactMatch) {
  EXPECT_TRUE(exact_match(" 68220.", "68220"));
  EXPECT_TRUE(exact_match("68220", "68220"));
  EXPECT_TRUE(exact_match("\n \"68220\" is the key", "68220"));
  EXPECT_TRUE(exact_match(": a1b2c3d4", "a1b2c3d4"));
  EXPECT_FALSE(exact_match(" 682201", "68220"));
  EXPECT_FALSE(exact_match(" 6822", "68220"));
  EXPECT_FALSE(exact_match(" the key is 68220", "68220"));
  EXPECT_FALSE(exact_match("", "68220"));
  EXPECT_FALSE(exact_match("anything", ""));
}

TEST(EvalScoring, KlTop1AndNll) {
  // Two positions, vocab 3: identical rows give KL 0 and agreement; then a
  // row whose argmax differs, with KL checked against the formula.
  const std::vector<float> ref = {1, 2, 3, 0, 0, 1};
  const std::vector<float> same = ref;
  const std::vector<float> other = {1, 2, 3, 2, 0, 0};
  const std::vector<int32_t> next = {2, 0};
  WindowScore a, b;
  score_rows(same.data(), ref.data(), next.data(), 2, 3, a);
  EXPECT_EQ(a.scored, 2);
  EXPECT_EQ(a.top1_agree, 2);
  EXPECT_NEAR(a.kl_sum, 0, 1e-12);
  score_rows(other.data(), ref.data(), next.data(), 2, 3, b);
  EXPECT_EQ(b.top1_agree, 1);
  std::vector<double> lp, lq;
  log_softmax(ref.data() + 3, 3, lp);
  log_softmax(other.data() + 3, 3, lq);
  double kl = 0;
  for (int i = 0; i < 3; ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  EXPECT_NEAR(b.kl_sum, kl, 1e-12);
  EXPECT_GT(kl, 0.1);
  // NLL: -log softmax of the next token.
  std::vector<double> l0;
  log_softmax(other.data(), 3, l0);
  EXPECT_NEAR(b.nll_sum, -l0[2] - lq[0], 1e-12);
}

TEST(EvalTasks, PasskeyNeedleIsAtTheTokenDepthOfTheGrid) {
  const int32_t bos = tokenizer().bos_id();
  for (int64_t length : {160, 300, 777}) {
    const GridPrompt top = passkey_prompt(tokenizer(), bos, length, 0, 7);
    const GridPrompt bottom = passkey_prompt(tokenizer(), bos, length, 100, 7);
    // Depth 0: right after the intro; depth 100: right before the question.
    const int64_t intro = top.needle_position;
    const int64_t haystack = bottom.needle_position - top.needle_position;
    const int64_t question = length - bottom.needle_position - bottom.needle_tokens;
    EXPECT_GT(haystack, 0);
    EXPECT_GT(question, 0);
    for (double depth : {0.0, 10.0, 25.0, 33.3, 50.0, 90.0, 100.0}) {
      const GridPrompt p = passkey_prompt(tokenizer(), bos, length, depth, 7);
      SCOPED_TRACE("length " + std::to_string(length) + " depth " + std::to_string(depth));
      EXPECT_EQ(static_cast<int64_t>(p.tokens.size()), length);
      EXPECT_EQ(p.tokens[0], bos);
      EXPECT_EQ(p.needle_position - intro, std::llround(depth / 100 * static_cast<double>(haystack)));
      const std::vector<int32_t> needle(p.tokens.begin() + p.needle_position,
                                        p.tokens.begin() + p.needle_position + p.needle_tokens);
      EXPECT_EQ(tokenizer().decode(needle), " The pass key is " + p.answer + ". Remember it. " + p.answer + " is the pass key.");
      EXPECT_EQ(p.answer.size(), 5u);
      EXPECT_EQ(p.answer, top.answer);  // the key comes from the seed only
      EXPECT_TRUE(tokenizer().decode(std::vector<int32_t>(p.tokens.end() - question, p.tokens.end()))
                      .ends_with("What is the pass key? The pass key is"));
      // Everything else is the same filler, in order, as at depth 0.
      std::vector<int32_t> rest = p.tokens, rest_top = top.tokens;
      rest.erase(rest.begin() + p.needle_position, rest.begin() + p.needle_position + p.needle_tokens);
      rest_top.erase(rest_top.begin() + top.needle_position, rest_top.begin() + top.needle_position + top.needle_tokens);
      EXPECT_EQ(rest, rest_top);
    }
  }
  EXPECT_NE(passkey_prompt(tokenizer(), bos, 300, 50, 7).answer, passkey_prompt(tokenizer(), bos, 300, 50, 8).answer);
  EXPECT_NE(expect_error([&] { passkey_prompt(tokenizer(), bos, 40, 50, 7); }).find("too short"), std::string::npos);
}

TEST(EvalTasks, GridItemsAreReproducibleFromTheSeed) {
  TaskSettings s;
  s.task = "passkey";
  s.lengths = {200, 400};
  s.depths = {0, 50, 100};
  s.samples = 2;
  s.seed = 3;
  const auto a = build_items(s, tokenizer(), tokenizer().bos_id());
  const auto b = build_items(s, tokenizer(), tokenizer().bos_id());
  ASSERT_EQ(a.size(), 12u);
  std::set<std::string> answers;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].tokens, b[i].tokens);
    EXPECT_EQ(a[i].answer, b[i].answer);
    EXPECT_EQ(a[i].index, static_cast<int>(i));
    EXPECT_EQ(static_cast<int64_t>(a[i].tokens.size()), s.lengths[a[i].length_index]);
    EXPECT_EQ(a[i].depth, s.depths[a[i].depth_index]);
    answers.insert(a[i].answer);
  }
  EXPECT_GT(answers.size(), 6u);  // prompts of the grid draw their own keys
  s.seed = 4;
  EXPECT_NE(build_items(s, tokenizer(), tokenizer().bos_id())[0].answer, a[0].answer);
}

TEST(EvalTasks, NiahPlacesTheUsersNeedleInTheirText) {
  const fs::path dir = fs::temp_directory_path() / ("podkv_eval_niah_" + std::to_string(getpid()));
  const fs::path text = write_text_file(dir, 200);
  TaskSettings s;
  s.task = "niah";
  s.data_files = {text.string()};
  s.lengths = {256, 512};
  s.depths = {0, 40, 100};
  s.needle = "The secret ingredient of the soup is {answer}.";
  s.question = "What is the secret ingredient of the soup? It is";
  s.answer = "saffron";
  validate_settings(s, 4096);
  const auto items = build_items(s, tokenizer(), tokenizer().bos_id());
  ASSERT_EQ(items.size(), 6u);
  const std::vector<int32_t> haystack = read_text_tokens(text.string(), tokenizer(), 1000);
  for (const TaskItem& item : items) {
    EXPECT_EQ(static_cast<int64_t>(item.tokens.size()), item.length);
    EXPECT_EQ(item.answer, "saffron");
    const std::vector<int32_t> needle(item.tokens.begin() + item.needle_position,
                                      item.tokens.begin() + item.needle_position + item.needle_tokens);
    EXPECT_EQ(tokenizer().decode(needle), " The secret ingredient of the soup is saffron. ");
    // The tokens right after the needle continue the user's text.
    const int32_t after = item.tokens[item.needle_position + item.needle_tokens];
    EXPECT_NE(std::find(haystack.begin(), haystack.end(), after), haystack.end());
  }
  // Depth in tokens: the same prompt of each length shifts the needle by round(depth · haystack).
  const int64_t h = items[2].needle_position - items[0].needle_position;
  EXPECT_EQ(items[1].needle_position - items[0].needle_position, std::llround(0.4 * h));
  // Without a fixed answer each prompt gets a 7-digit number in {answer}.
  s.answer.clear();
  const auto random = build_items(s, tokenizer(), tokenizer().bos_id());
  EXPECT_EQ(random[0].answer.size(), 7u);
  // A haystack shorter than the prompt needs.
  s.data_files = {write_text_file(dir / "short", 5).string()};
  const std::string e = expect_error([&] { build_items(s, tokenizer(), tokenizer().bos_id()); });
  EXPECT_NE(e.find("--data: the haystack holds"), std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(EvalTasks, KvRetrievalAsksThePairAtTheDepth) {
  const int32_t bos = tokenizer().bos_id();
  const GridPrompt first = kv_retrieval_prompt(tokenizer(), bos, 400, 0, 5);
  const GridPrompt last = kv_retrieval_prompt(tokenizer(), bos, 400, 100, 5);
  const GridPrompt middle = kv_retrieval_prompt(tokenizer(), bos, 400, 50, 5);
  for (const GridPrompt* p : {&first, &last, &middle}) {
    EXPECT_LE(p->tokens.size(), 400u);
    EXPECT_GT(p->tokens.size(), 350u);  // filled with whole pairs
    const std::string pair = tokenizer().decode(std::vector<int32_t>(
        p->tokens.begin() + p->needle_position, p->tokens.begin() + p->needle_position + p->needle_tokens));
    EXPECT_NE(pair.find("\": \"" + p->answer + "\""), std::string::npos) << pair;
    const std::string key = pair.substr(pair.find('"') + 1, 8);
    const std::string text = tokenizer().decode(p->tokens);
    EXPECT_TRUE(text.ends_with("Key: \"" + key + "\"\nCorresponding value:")) << text.substr(text.size() - 80);
    EXPECT_EQ(p->answer.size(), 8u);
  }
  // Depth 0 asks the first pair (right after the intro), 100 the last one (before the question).
  EXPECT_TRUE(tokenizer().decode(std::vector<int32_t>(first.tokens.begin(), first.tokens.begin() + first.needle_position)).ends_with("{"));
  EXPECT_TRUE(tokenizer().decode(std::vector<int32_t>(last.tokens.begin() + last.needle_position + last.needle_tokens, last.tokens.end())).starts_with("}"));
  EXPECT_LT(first.needle_position, middle.needle_position);
  EXPECT_LT(middle.needle_position, last.needle_position);
}

TEST(EvalTasks, BadSettingsNameTheOption) {
  TaskSettings s;
  s.task = "passkey";
  s.lengths = {512};
  s.depths = {0, 120};
  EXPECT_NE(expect_error([&] { validate_settings(s, 4096); }).find("--depths: 120 is outside 0..100"), std::string::npos);
  s.depths = {-5};
  EXPECT_NE(expect_error([&] { validate_settings(s, 4096); }).find("--depths: -5"), std::string::npos);
  s.depths = {50};
  s.lengths = {8192};
  EXPECT_NE(expect_error([&] { validate_settings(s, 4096); }).find("--lengths: 8192 tokens"), std::string::npos);
  s.task = "summarize";
  EXPECT_NE(expect_error([&] { validate_settings(s, 4096); }).find("--task: unknown task 'summarize'"), std::string::npos);
  s.task = "agreement";
  EXPECT_NE(expect_error([&] { validate_settings(s, 4096); }).find("--data"), std::string::npos);
  s.data_files = {"x.txt"};
  s.context = 5000;
  EXPECT_NE(expect_error([&] { validate_settings(s, 4096); }).find("--context: 5000 tokens is longer"), std::string::npos);
  s.context = 100;
  s.prefill = 100;
  EXPECT_NE(expect_error([&] { validate_settings(s, 4096); }).find("--prefill"), std::string::npos);
  s.task = "niah";
  s.lengths = {512};
  s.needle = "no placeholder";
  EXPECT_NE(expect_error([&] { validate_settings(s, 4096); }).find("--needle"), std::string::npos);
}

// Three perplexity windows of 128 tokens over `text`.
TaskSettings three_windows(const fs::path& text) {
  TaskSettings s;
  s.task = "perplexity";
  s.data_files = {text.string()};
  s.context = 128;
  s.samples = 3;
  return s;
}

TEST(EvalTasks, TextWindowsStartWithBosAndDoNotOverlap) {
  const fs::path dir = fs::temp_directory_path() / ("podkv_eval_windows_" + std::to_string(getpid()));
  const fs::path text = write_text_file(dir, 300);
  TaskSettings s = three_windows(text);
  const auto items = build_items(s, tokenizer(), tokenizer().bos_id());
  ASSERT_EQ(items.size(), 3u);
  const std::vector<int32_t> all = read_text_tokens(text.string(), tokenizer(), 1 << 20);
  for (size_t i = 0; i < items.size(); ++i) {
    EXPECT_EQ(items[i].tokens.size(), 128u);
    EXPECT_EQ(items[i].tokens[0], tokenizer().bos_id());
    EXPECT_TRUE(contains(all, std::vector<int32_t>(items[i].tokens.begin() + 1, items[i].tokens.end()), 127 * static_cast<int64_t>(i)));
  }
  s.context = 1 << 20;
  EXPECT_NE(expect_error([&] { build_items(s, tokenizer(), tokenizer().bos_id()); }).find("--data: the text holds"), std::string::npos);
  fs::remove_all(dir);
}

// Without BOS (podkv eval --no-bos) a window is `context` tokens of the text, back to back.
TEST(EvalTasks, TextWindowsWithoutBosAreTextOnly) {
  const fs::path dir = fs::temp_directory_path() / ("podkv_eval_windows_nobos_" + std::to_string(getpid()));
  const fs::path text = write_text_file(dir, 300);
  TaskSettings s = three_windows(text);
  s.bos = false;
  const auto items = build_items(s, tokenizer(), tokenizer().bos_id());  // s.bos wins over the id
  ASSERT_EQ(items.size(), 3u);
  const std::vector<int32_t> all = read_text_tokens(text.string(), tokenizer(), 1 << 20);
  for (size_t i = 0; i < items.size(); ++i)
    EXPECT_EQ(items[i].tokens, std::vector<int32_t>(all.begin() + 128 * i, all.begin() + 128 * (i + 1)));
  EXPECT_EQ(to_json(s)["bos"], false);
  s.bos = true;
  EXPECT_FALSE(to_json(s).contains("bos"));  // runs from before the option resume
  fs::remove_all(dir);
}

TEST(EvalPolicySpec, ParsesNamesAndSettings) {
  const auto specs = parse_policy_specs({"dense,pod:group=2", "streaming:sink=4:recent=64"});
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[1].label, "pod:group=2");
  EXPECT_EQ(specs[1].policy, "pod");
  EXPECT_EQ(specs[1].settings, (std::vector<std::pair<std::string, std::string>>{{"group", "2"}}));
  EXPECT_EQ(specs[2].settings.size(), 2u);
  EXPECT_NE(expect_error([] { parse_policy_specs({"dense,dense"}); }).find("given twice"), std::string::npos);
  EXPECT_NE(expect_error([] { parse_policy_specs({"pod:size=2"}); }).find("unknown setting 'size'"), std::string::npos);
  EXPECT_NE(expect_error([] { parse_policy_specs({"pod:group"}); }).find("KEY=VALUE"), std::string::npos);
  EXPECT_NE(expect_error([] { parse_policy_specs({"dense,"}); }).find("empty policy"), std::string::npos);
}

// The window schedule: prefill P tokens in one call, then chunks of 3.
TaskSettings window_settings(const std::string& task, int64_t context, int64_t prefill, int64_t chunk) {
  TaskSettings s;
  s.task = task;
  s.context = context;
  s.prefill = prefill;
  s.decode_chunk = chunk;
  return s;
}

TaskItem random_window(int64_t n, uint64_t seed) {
  TaskItem item;
  item.length = n;
  std::mt19937_64 rng(seed);
  item.tokens.push_back(tokenizer().bos_id());
  while (static_cast<int64_t>(item.tokens.size()) < n) item.tokens.push_back(static_cast<int32_t>(rng() % 1000));
  return item;
}

TEST(EvalRun, PerplexityEqualsTheMeanNllComputedDirectly) {
  const Model& model = *tiny().model;
  const int64_t n = 97, prefill = 40;
  const TaskItem item = random_window(n, 11);
  const EvalPolicy dense = dense_policy();
  const auto records = run_window_item(model, {&dense}, item, window_settings("perplexity", n, prefill, 3), RunSettings{}, false);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].score.scored, n - prefill);
  // Directly: one forward over the window, NLL of tokens prefill .. n-1.
  auto cache = default_cache(dense.layout, n, 256);
  Runner runner(model, *cache);
  std::vector<float> logits;
  runner.forward(cache->add_sequence(), item.tokens, true, logits);
  const int64_t vocab = model.config().vocab_size;
  double nll = 0;
  for (int64_t t = prefill; t < n; ++t) {
    const float* row = logits.data() + (t - 1) * vocab;
    double max = -INFINITY, sum = 0;
    for (int64_t v = 0; v < vocab; ++v) max = std::max(max, static_cast<double>(row[v]));
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
    nll -= row[item.tokens[t]] - max - std::log(sum);
  }
  nll /= static_cast<double>(n - prefill);
  EXPECT_NEAR(records[0].score.nll_sum / records[0].score.scored, nll, 1e-4 * nll);
  // And through the report: perplexity = exp(mean NLL).
  std::vector<EvalPolicy> policies = {dense};
  std::vector<TaskItem> items = {item};
  ReportInput in;
  in.config = model.config();
  in.settings = window_settings("perplexity", n, prefill, 3);
  in.policies = &policies;
  in.items = &items;
  in.records = &records;
  const nlohmann::json results = build_results(in);
  EXPECT_NEAR(results["policies"][0]["perplexity"].get<double>(), std::exp(nll), 1e-3 * std::exp(nll));
}

TEST(EvalRun, AgreementIsExactForDenseAndOneLayerPodAndKvBytesAreTheCaches) {
  const Model& model = *tiny().model;
  const int64_t n = 130, prefill = 50;
  const TaskItem item = random_window(n, 12);
  const EvalPolicy dense = dense_policy(), pod1 = pod_policy(1, 4, 16), pod2 = pod_policy(2, 4, 16),
                   streaming = streaming_policy(4, 16);
  const auto records = run_window_item(model, {&dense, &pod1, &pod2, &streaming}, item,
                                       window_settings("agreement", n, prefill, 4), RunSettings{}, true);
  ASSERT_EQ(records.size(), 4u);
  for (const ItemRecord& r : records) {
    SCOPED_TRACE(r.policy);
    EXPECT_EQ(r.score.scored, n - prefill);
    EXPECT_EQ(r.kv_length, n);
    // What a cache of the same layout holds after the same tokens.
    const EvalPolicy& p = r.policy == "dense" ? dense : r.policy == "streaming" ? streaming : r.policy == "pod:group=1" ? pod1 : pod2;
    auto cache = default_cache(p.layout, n, 256);
    Runner runner(model, *cache);
    std::vector<float> logits;
    const int seq = cache->add_sequence();
    runner.forward(seq, item.tokens, false, logits);
    EXPECT_EQ(r.kv_bytes, static_cast<int64_t>(cache->bytes_reserved(seq)));
    EXPECT_EQ(r.kv_bytes_in_use, static_cast<int64_t>(cache->bytes_in_use(seq)));
  }
  EXPECT_EQ(records[0].score.top1_agree, n - prefill);
  EXPECT_LT(records[0].score.kl_sum, 1e-9);
  EXPECT_EQ(records[1].score.top1_agree, n - prefill);  // blocks of one layer: plain attention
  EXPECT_LT(records[1].score.kl_sum, 1e-9);
  EXPECT_EQ(records[1].kv_bytes, records[0].kv_bytes);
  EXPECT_GT(records[2].score.kl_sum, 1e-9);  // blocks of two: distant keys shared
  EXPECT_LT(records[2].kv_bytes, records[0].kv_bytes);
  EXPECT_GT(records[3].score.kl_sum, 1e-9);  // distant tokens dropped
  EXPECT_LT(records[3].kv_bytes, records[2].kv_bytes);
  EXPECT_EQ(records[0].kv_bytes, dense_cache_bytes(model.config(), n));
}

TEST(EvalRun, GridItemPrefillsOnceThenGeneratesAndScores) {
  const Model& model = *tiny().model;
  TaskSettings s;
  s.task = "passkey";
  s.lengths = {150};
  s.depths = {50};
  const auto items = build_items(s, *tiny().tok, tiny().tok->bos_id());
  ASSERT_EQ(items.size(), 1u);
  const EvalPolicy streaming = streaming_policy(4, 32);
  const ItemRecord r = run_grid_item(model, *tiny().tok, streaming, items[0], s, RunSettings{});
  EXPECT_EQ(r.prompt_tokens, 150);
  EXPECT_EQ(r.kv_length, 150);  // read after the prefill
  EXPECT_EQ(r.correct, exact_match(r.generated, items[0].answer));
  EXPECT_LT(r.kv_bytes, dense_cache_bytes(model.config(), 150));
  // Run through run_eval with one record already done: only the other runs.
  std::vector<EvalPolicy> policies = {dense_policy(), streaming};
  std::vector<ItemRecord> got;
  run_eval(model, *tiny().tok, s, RunSettings{}, policies, items, {{0, "dense", policies[0].options.dump()}},
           [&](const ItemRecord& rec) { got.push_back(rec); });
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].policy, "streaming");
  EXPECT_EQ(got[0].generated, r.generated);  // greedy: the same answer again
}

TEST(EvalReport, TableHeatmapAndCheckpoint) {
  const fs::path dir = fs::temp_directory_path() / ("podkv_eval_report_" + std::to_string(getpid()));
  fs::remove_all(dir);
  TaskSettings s;
  s.task = "passkey";
  s.lengths = {200, 300};
  s.depths = {0, 50, 100};
  std::vector<EvalPolicy> policies = {dense_policy(), streaming_policy(4, 16)};
  std::vector<TaskItem> items = build_items(s, tokenizer(), tokenizer().bos_id());
  ASSERT_EQ(items.size(), 6u);
  const nlohmann::json settings = to_json(s);
  {
    Checkpoint fresh(dir.string(), settings, false);
    for (const TaskItem& item : items) {
      for (const EvalPolicy& p : policies) {
        ItemRecord r;
        r.item = item.index;
        r.policy = p.label;
        r.options = p.options.dump();
        r.kv_length = item.length;
        r.kv_bytes = item.length * (p.label == "dense" ? 1000 : 250);
        r.correct = p.label == "dense" || item.depth_index == 2;  // streaming finds only the last needle
        r.generated = r.correct ? item.answer : "?";
        fresh.add(r);
      }
    }
  }
  // An interrupted write: a partial last line is dropped on --resume.
  { std::ofstream(dir / "progress.jsonl", std::ios::app) << "{\"item\": 3, \"pol"; }
  Checkpoint resumed(dir.string(), settings, true);
  ASSERT_EQ(resumed.records().size(), 12u);
  EXPECT_EQ(resumed.done().size(), 12u);
  TaskSettings other = s;
  other.lengths = {100};
  EXPECT_NE(expect_error([&] { Checkpoint(dir.string(), to_json(other), true); }).find("--resume"), std::string::npos);

  ReportInput in;
  in.model_path = "models/tiny";
  in.config = tiny().model->config();
  in.settings = s;
  in.policies = &policies;
  in.items = &items;
  in.records = &resumed.records();
  const nlohmann::json results = build_results(in);
  const auto& st = results["policies"][1];
  EXPECT_EQ(st["kv_bytes"], 75000);
  EXPECT_EQ(st["kv_length"], 300);
  EXPECT_EQ(st["dense_kv_bytes"], dense_cache_bytes(in.config, 300));
  EXPECT_NEAR(st["accuracy"].get<double>(), 1.0 / 3, 1e-12);
  // accuracy[depth][length]: rows are depths.
  EXPECT_EQ(st["grid"]["accuracy"].size(), 3u);
  EXPECT_EQ(st["grid"]["accuracy"][0].size(), 2u);
  EXPECT_EQ(st["grid"]["accuracy"][2][1], 1.0);
  EXPECT_EQ(st["grid"]["accuracy"][0][1], 0.0);
  const std::string md = markdown_table(results);
  EXPECT_NE(md.find("| streaming | 75,000 (73.24 KiB) |"), std::string::npos) << md;
  EXPECT_NE(md.find("| dense | 300,000 (292.97 KiB) |"), std::string::npos) << md;
  const auto written = write_report(dir.string(), results);
  EXPECT_TRUE(fs::exists(dir / "results.json"));
  EXPECT_TRUE(fs::exists(dir / "table.md"));
  if (plot::png_available()) {
    ASSERT_EQ(written.size(), 3u);
    std::ifstream png(dir / "passkey_heatmap.png", std::ios::binary);
    char magic[8] = {};
    png.read(magic, 8);
    EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace podkv::eval
