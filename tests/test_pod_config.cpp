// pod.json parsing, validation, round trip, the uniform generator and the
// anchor lookup (PodLayout / anchor_of).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "kv/pod_config.h"
#include "util/error.h"

namespace podkv {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// The example of docs/pod-method.md, for a model of 10 layers and 2 KV heads.
json example_json() {
  return json::parse(R"({"sink_tokens": 16, "recent_tokens": 4080,
                         "anchors": [[0, 2, 5, 9], [0, 3, 4]],
                         "tau": 0.7, "share_values": false})");
}

// A fresh path in the temp directory, unique per process and test.
fs::path temp_path(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir =
      fs::temp_directory_path() / ("podkv_test_" + std::to_string(::getpid()) + "_" + info->name());
  fs::create_directories(dir);
  return dir / name;
}

void write_file_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string read_file_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Parses `j` against the model and returns the Error message ("" when it parsed).
std::string parse_error(const json& j, int num_layers, int num_kv_heads) {
  try {
    parse_pod_config(j, "pod.json", num_layers, num_kv_heads);
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << "message is not one line: " << message;
    return message;
  }
  return "";
}

TEST(PodConfig, ParsesTheDocumentedExample) {
  PodConfig cfg = parse_pod_config(example_json(), "pod.json", 10, 2);
  EXPECT_EQ(cfg.sink_tokens, 16);
  EXPECT_EQ(cfg.recent_tokens, 4080);
  ASSERT_EQ(cfg.anchors.size(), 2u);
  EXPECT_EQ(cfg.anchors[0], (std::vector<int>{0, 2, 5, 9}));
  EXPECT_EQ(cfg.anchors[1], (std::vector<int>{0, 3, 4}));
  ASSERT_TRUE(cfg.tau.has_value());
  EXPECT_FLOAT_EQ(*cfg.tau, 0.7f);
  EXPECT_FALSE(cfg.share_values);
  EXPECT_TRUE(cfg.extra.empty());
}

TEST(PodConfig, OptionalFields) {
  json j = example_json();
  j.erase("tau");
  j.erase("share_values");
  PodConfig cfg = parse_pod_config(j, "pod.json", 10, 2);
  EXPECT_FALSE(cfg.tau.has_value());
  EXPECT_FALSE(cfg.share_values);

  j["tau"] = nullptr;
  j["share_values"] = true;
  cfg = parse_pod_config(j, "pod.json", 10, 2);
  EXPECT_FALSE(cfg.tau.has_value());
  EXPECT_TRUE(cfg.share_values);

  // The ends of [0, 1] are allowed, also written as integers; sink 0 too.
  j["tau"] = 0;
  j["sink_tokens"] = 0;
  j["recent_tokens"] = 1;
  EXPECT_EQ(*parse_pod_config(j, "pod.json", 10, 2).tau, 0.0f);
  j["tau"] = 1;
  EXPECT_EQ(*parse_pod_config(j, "pod.json", 10, 2).tau, 1.0f);
}

TEST(PodConfig, DenseAndSingleBlockAreValid) {
  json j = example_json();
  j["anchors"] = json::parse("[[0, 1, 2, 3], [0]]");
  PodConfig cfg = parse_pod_config(j, "pod.json", 4, 2);
  EXPECT_FALSE(is_dense(cfg, 4));
  j["anchors"] = json::parse("[[0, 1, 2, 3], [0, 1, 2, 3]]");
  EXPECT_TRUE(is_dense(parse_pod_config(j, "pod.json", 4, 2), 4));
}

TEST(PodConfig, ErrorMessagesOfTheBrief) {
  json j = example_json();
  j["anchors"] = json::parse("[[0], [0], [0], [0, 8, 40]]");
  EXPECT_EQ(parse_error(j, 32, 4),
            "pod.json: anchors[3]: layer 40 does not exist (model has 32 layers)");
  j["anchors"] = json::parse("[[0], [0, 3, 7, 5]]");
  EXPECT_EQ(parse_error(j, 32, 2),
            "pod.json: anchors[1]: not increasing at position 3 (5 after 7)");
  j["anchors"] = json::parse("[[0], [0], [0], [0]]");
  EXPECT_EQ(parse_error(j, 32, 8), "pod.json: anchors has 4 lists but the model has 8 KV heads");
}

TEST(PodConfig, AnchorListErrors) {
  struct Case {
    const char* anchors;  // JSON text
    std::string expected;
  };
  const Case cases[] = {
      {"[[0, 3, 3], [0]]", "pod.json: anchors[0]: not increasing at position 2 (3 after 3)"},
      {"[[0, 4, 2], [0]]", "pod.json: anchors[0]: not increasing at position 2 (2 after 4)"},
      {"[[0], [1, 3]]", "pod.json: anchors[1]: first anchor is 1, must be 0"},
      {"[[0], [-1, 3]]", "pod.json: anchors[1]: first anchor is -1, must be 0"},
      {"[[0], []]", "pod.json: anchors[1]: empty"},
      {"[[0, 10], [0]]", "pod.json: anchors[0]: layer 10 does not exist (model has 10 layers)"},
      {"[[0, 4, 12, 3], [0]]",
       "pod.json: anchors[0]: layer 12 does not exist (model has 10 layers)"},
      {"[[0], [0], [0]]", "pod.json: anchors has 3 lists but the model has 2 KV heads"},
      {"[]", "pod.json: anchors has 0 lists but the model has 2 KV heads"},
      {"[[0], 3]", "pod.json: anchors[1]: expected a list of layers, got number 3"},
      {"[[0, \"2\"], [0]]", "pod.json: anchors[0][1]: expected an integer, got string \"2\""},
      {"[[0, 2.5], [0]]", "pod.json: anchors[0][1]: expected an integer, got number 2.5"},
      {"[[0, null], [0]]", "pod.json: anchors[0][1]: expected an integer, got null"},
      {"{}", "pod.json: anchors: expected an array of lists"},
      {"\"0,1\"", "pod.json: anchors: expected an array of lists"},
  };
  for (const Case& c : cases) {
    json j = example_json();
    j["anchors"] = json::parse(c.anchors);
    EXPECT_EQ(parse_error(j, 10, 2).rfind(c.expected, 0), 0u)
        << "anchors " << c.anchors << " gave \"" << parse_error(j, 10, 2) << "\"";
  }
}

TEST(PodConfig, FieldErrorsNameTheField) {
  struct Case {
    std::string field;
    json value;  // a discarded json means "remove the field"
    std::string expected;
  };
  const json missing = json::value_t::discarded;
  const Case cases[] = {
      {"sink_tokens", missing, "pod.json: sink_tokens: missing"},
      {"recent_tokens", missing, "pod.json: recent_tokens: missing"},
      {"anchors", missing, "pod.json: anchors: missing"},
      {"sink_tokens", "16", "pod.json: sink_tokens: expected an integer, got string"},
      {"sink_tokens", 16.5, "pod.json: sink_tokens: expected an integer, got number 16.5"},
      {"sink_tokens", nullptr, "pod.json: sink_tokens: expected an integer, got null"},
      {"sink_tokens", -1, "pod.json: sink_tokens: must be >= 0 (got -1)"},
      {"sink_tokens", 1e12, "pod.json: sink_tokens: expected an integer"},
      {"sink_tokens", 1000000000000LL, "pod.json: sink_tokens: 1000000000000 is out of range"},
      {"recent_tokens", true, "pod.json: recent_tokens: expected an integer, got boolean"},
      {"recent_tokens", 0, "pod.json: recent_tokens: must be >= 1 (got 0)"},
      {"recent_tokens", 3000000000ULL, "pod.json: recent_tokens: 3000000000 is out of range"},
      {"recent_tokens", -5000000000LL, "pod.json: recent_tokens: -5000000000 is out of range"},
      {"tau", 1.5, "pod.json: tau: must be in [0, 1] or null (got 1.5)"},
      {"tau", -0.1, "pod.json: tau: must be in [0, 1] or null (got -0.1)"},
      {"tau", "0.7", "pod.json: tau: expected a number or null, got string"},
      {"share_values", 0, "pod.json: share_values: expected true or false, got number 0"},
      {"share_values", "false", "pod.json: share_values: expected true or false"},
  };
  for (const Case& c : cases) {
    json j = example_json();
    if (c.value.is_discarded())
      j.erase(c.field);
    else
      j[c.field] = c.value;
    EXPECT_EQ(parse_error(j, 10, 2).rfind(c.expected, 0), 0u)
        << c.field << " = " << c.value.dump() << " gave \"" << parse_error(j, 10, 2) << "\"";
  }
  EXPECT_EQ(parse_error(json::array(), 10, 2).rfind("pod.json: expected a JSON object", 0), 0u);
  EXPECT_NE(parse_error(example_json(), 0, 2).find("at least one layer"), std::string::npos);
  EXPECT_NE(parse_error(example_json(), 10, 0).find("at least one KV head"), std::string::npos);
}

TEST(PodConfig, LoadNamesTheFile) {
  fs::path path = temp_path("pod.json");
  write_file_text(path, R"({"sink_tokens": 4, "recent_tokens": 64, "anchors": [[0, 2]]})");
  PodConfig cfg = load_pod_config(path.string(), 3, 1);
  EXPECT_EQ(cfg.anchors[0], (std::vector<int>{0, 2}));

  try {
    load_pod_config(path.string(), 2, 1);
    FAIL() << "layer 2 of a 2-layer model was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              path.string() + ": anchors[0]: layer 2 does not exist (model has 2 layers)");
  }

  write_file_text(path, "{\"sink_tokens\": 4,\n \"recent_tokens\": ");
  try {
    load_pod_config(path.string(), 3, 1);
    FAIL() << "truncated JSON was accepted";
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_EQ(message.rfind(path.string() + ": invalid JSON", 0), 0u) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos);
  }

  fs::path absent = temp_path("absent.json");
  try {
    load_pod_config(absent.string(), 3, 1);
    FAIL() << "a missing file was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(absent.string() + ": cannot open", 0), 0u) << e.what();
  }
  fs::remove_all(path.parent_path());
}

TEST(PodConfig, UnknownFieldsRoundTrip) {
  json j = example_json();
  j["analysis"] = {{"delta", 0.5}, {"sequences", 64}, {"scope", "distant"}};
  j["note"] = "made by podkv group";
  PodConfig cfg = parse_pod_config(j, "pod.json", 10, 2);
  EXPECT_EQ(cfg.extra.size(), 2u);
  EXPECT_EQ(cfg.extra["analysis"]["sequences"], 64);

  fs::path path = temp_path("pod.json");
  save_pod_config(path.string(), cfg);
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  const std::string text = read_file_text(path);
  EXPECT_NE(text.find("[0, 2, 5, 9]"), std::string::npos) << text;   // one list per line
  EXPECT_NE(text.find("\"tau\": 0.7,"), std::string::npos) << text;  // not 0.699999988

  PodConfig back = load_pod_config(path.string(), 10, 2);
  EXPECT_EQ(back.sink_tokens, cfg.sink_tokens);
  EXPECT_EQ(back.recent_tokens, cfg.recent_tokens);
  EXPECT_EQ(back.anchors, cfg.anchors);
  EXPECT_EQ(back.tau, cfg.tau);
  EXPECT_EQ(back.share_values, cfg.share_values);
  EXPECT_EQ(back.extra, cfg.extra);
  EXPECT_EQ(to_json(back), to_json(cfg));
  EXPECT_EQ(json::parse(text), to_json(cfg));
  fs::remove_all(path.parent_path());
}

TEST(PodConfig, ToJson) {
  PodConfig cfg = uniform_pod_config(4, 2, 2, 8, 32);
  json j = to_json(cfg);
  EXPECT_TRUE(j["tau"].is_null());
  EXPECT_EQ(j["anchors"], json::parse("[[0, 2], [0, 2]]"));
  EXPECT_EQ(j["share_values"], false);
  cfg.tau = 0.7f;
  EXPECT_EQ(to_json(cfg)["tau"].get<double>(), 0.7);
  // Known fields win over an extra field of the same name.
  cfg.extra["sink_tokens"] = 999;
  EXPECT_EQ(to_json(cfg)["sink_tokens"], 8);
}

TEST(PodConfig, SaveRejectsInvalidConfigsAndBadPaths) {
  fs::path path = temp_path("pod.json");
  PodConfig cfg = uniform_pod_config(4, 2, 2, 8, 32);
  cfg.anchors[1] = {0, 2, 2};
  try {
    save_pod_config(path.string(), cfg);
    FAIL() << "saved a non-increasing anchor list";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(path.string() + ": anchors[1]: not increasing", 0), 0u)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(path));
  cfg.anchors.clear();
  EXPECT_THROW(save_pod_config(path.string(), cfg), Error);

  cfg = uniform_pod_config(4, 2, 2, 8, 32);
  fs::path bad = path.parent_path() / "no_such_dir" / "pod.json";
  try {
    save_pod_config(bad.string(), cfg);
    FAIL() << "wrote into a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad.string()), std::string::npos) << e.what();
  }
  // Overwriting an existing file works (the rename replaces it).
  write_file_text(path, "old");
  save_pod_config(path.string(), cfg);
  EXPECT_EQ(load_pod_config(path.string(), 4, 2).anchors, cfg.anchors);
  fs::remove_all(path.parent_path());
}

TEST(PodConfig, UniformShapes) {
  PodConfig cfg = uniform_pod_config(10, 3, 3, 16, 128);
  ASSERT_EQ(cfg.anchors.size(), 3u);
  for (const auto& list : cfg.anchors) EXPECT_EQ(list, (std::vector<int>{0, 3, 6, 9}));
  EXPECT_EQ(cfg.sink_tokens, 16);
  EXPECT_EQ(cfg.recent_tokens, 128);
  EXPECT_FALSE(cfg.tau.has_value());
  EXPECT_FALSE(cfg.share_values);

  EXPECT_EQ(uniform_pod_config(8, 1, 4, 0, 1).anchors[0], (std::vector<int>{0, 4}));
  EXPECT_EQ(uniform_pod_config(8, 1, 8, 0, 1).anchors[0], (std::vector<int>{0}));
  EXPECT_EQ(uniform_pod_config(8, 1, 100, 0, 1).anchors[0], (std::vector<int>{0}));
  EXPECT_TRUE(is_dense(uniform_pod_config(5, 2, 1, 0, 1), 5));
  EXPECT_FALSE(is_dense(uniform_pod_config(5, 2, 2, 0, 1), 5));

  EXPECT_DOUBLE_EQ(PodLayout(cfg, 10, 3).average_block_length(), 2.5);
  EXPECT_THROW(uniform_pod_config(8, 1, 0, 0, 1), Error);
  EXPECT_THROW(uniform_pod_config(8, 0, 2, 0, 1), Error);
  EXPECT_THROW(uniform_pod_config(0, 1, 2, 0, 1), Error);
  EXPECT_THROW(uniform_pod_config(8, 1, 2, -1, 1), Error);
  EXPECT_THROW(uniform_pod_config(8, 1, 2, 0, 0), Error);
}

TEST(PodLayout, TableMatchesTheDefinition) {
  PodConfig cfg = parse_pod_config(example_json(), "pod.json", 10, 2);
  PodLayout layout(cfg, 10, 2);
  EXPECT_EQ(layout.num_layers(), 10);
  EXPECT_EQ(layout.num_kv_heads(), 2);
  // Head 0: blocks {0,1} {2,3,4} {5..8} {9}; head 1: {0,1,2} {3} {4..9}.
  const int anchor0[10] = {0, 0, 2, 2, 2, 5, 5, 5, 5, 9};
  const int block0[10] = {0, 0, 1, 1, 1, 2, 2, 2, 2, 3};
  const int anchor1[10] = {0, 0, 0, 3, 4, 4, 4, 4, 4, 4};
  const int block1[10] = {0, 0, 0, 1, 2, 2, 2, 2, 2, 2};
  for (int l = 0; l < 10; ++l) {
    EXPECT_EQ(layout.anchor(l, 0), anchor0[l]) << "layer " << l;
    EXPECT_EQ(layout.anchor(l, 1), anchor1[l]) << "layer " << l;
    EXPECT_EQ(layout.block_of(l, 0), block0[l]) << "layer " << l;
    EXPECT_EQ(layout.block_of(l, 1), block1[l]) << "layer " << l;
    EXPECT_EQ(layout.is_anchor(l, 0), anchor0[l] == l);
    EXPECT_EQ(layout.is_anchor(l, 1), anchor1[l] == l);
    EXPECT_EQ(anchor_of(cfg, l, 0), anchor0[l]);
    EXPECT_EQ(anchor_of(cfg, l, 1), anchor1[l]);
  }
  EXPECT_EQ(layout.num_blocks(0), 4);
  EXPECT_EQ(layout.num_blocks(1), 3);
  EXPECT_EQ(layout.total_blocks(), 7);
  EXPECT_EQ(layout.anchors(1), (std::vector<int>{0, 3, 4}));
  EXPECT_DOUBLE_EQ(layout.average_block_length(), 20.0 / 7.0);
  EXPECT_FALSE(layout.is_dense());
  EXPECT_TRUE(PodLayout(uniform_pod_config(6, 2, 1, 0, 1), 6, 2).is_dense());

  EXPECT_THROW(layout.anchor(10, 0), Error);
  EXPECT_THROW(layout.anchor(-1, 0), Error);
  EXPECT_THROW(layout.block_of(0, 2), Error);
  EXPECT_THROW(layout.num_blocks(-1), Error);
  EXPECT_THROW(anchor_of(cfg, 0, 2), Error);
  EXPECT_THROW(anchor_of(cfg, -1, 0), Error);
}

TEST(PodLayout, ValidatesTheConfig) {
  PodConfig cfg = uniform_pod_config(8, 2, 3, 4, 16);
  EXPECT_THROW(PodLayout(cfg, 5, 2), Error);  // layer 6 does not exist
  EXPECT_THROW(PodLayout(cfg, 8, 3), Error);  // 2 lists, 3 heads
  cfg.anchors[0] = {0, 5, 3};
  try {
    PodLayout layout(cfg, 8, 2);
    FAIL() << "accepted a non-increasing list";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "pod config: anchors[0]: not increasing at position 2 (3 after 5)");
  }
}

}  // namespace
}  // namespace podkv
