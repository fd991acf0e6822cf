// End-to-end: the podkv CLI on bad input exits 1 (never a crash) with exactly
// one line on stderr, "error: ...", naming the file, tensor, field or option
// at fault. The bad inputs are good fixtures with one thing broken.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "io/gguf.h"
#include "io/safetensors.h"

namespace podkv::clitest {
namespace {

// --help still goes to stdout with exit code 0.
void expect_ok_help(const CliResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(r.err.empty()) << r;
  EXPECT_NE(r.out.find("--model"), std::string::npos) << r;
}

using CliErrors = CliTest;

std::vector<std::string> gen(const fs::path& model, std::vector<std::string> more = {"--ids", "1,2,3", "-n", "2"}) {
  std::vector<std::string> a = {"generate", "-m", model.string()};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// ---- model directory and config.json ----

TEST_F(CliErrors, ModelPathDoesNotExist) {
  expect_error(run(gen(tmp_ / "no_such_model")), {"no_such_model"});
  expect_error(run({"info", "-m", (tmp_ / "no_such_model").string()}), {"no_such_model"});
}

TEST_F(CliErrors, DirectoryWithoutConfig) {
  fs::create_directories(tmp_ / "empty");
  expect_error(run(gen(tmp_ / "empty")), {"config.json"});
  expect_error(run({"info", "-m", (tmp_ / "empty").string()}), {"config.json"});
}

TEST_F(CliErrors, ConfigIsNotJson) {
  const fs::path m = copy_model("m");
  write_text(m / "config.json", "{\"architectures\": [\"LlamaForCausalLM\"],\n oops\n");
  expect_error(run(gen(m)), {"config.json"});
  expect_error(run({"info", "-m", m.string()}), {"config.json"});
}

TEST_F(CliErrors, ConfigMissingHiddenSize) {
  const fs::path m = copy_model("m");
  edit_json(m / "config.json", [](auto& j) { j.erase("hidden_size"); });
  expect_error(run(gen(m)), {"config.json", "hidden_size"});
}

TEST_F(CliErrors, UnknownArchitecture) {
  const fs::path m = copy_model("m");
  edit_json(m / "config.json", [](auto& j) { j["architectures"] = {"GPT2LMHeadModel"}; });
  expect_error(run(gen(m)), {"config.json", "GPT2LMHeadModel"});
}

TEST_F(CliErrors, UnsupportedRopeType) {
  const fs::path m = copy_model("m");
  edit_json(m / "config.json", [](auto& j) { j["rope_parameters"]["rope_type"] = "yarn"; });
  expect_error(run(gen(m)), {"config.json", "yarn"});
}

TEST_F(CliErrors, SlidingWindowOnMistral) {
  const fs::path m = copy_model("m");
  edit_json(m / "config.json", [](auto& j) {
    j["architectures"] = {"MistralForCausalLM"};
    j["sliding_window"] = 16;
  });
  expect_error(run(gen(m)), {"config.json", "sliding_window"});
}

TEST_F(CliErrors, SlidingLayersAndMissingQkNorms) {
  const fs::path m = copy_model("m");
  edit_json(m / "config.json", [](auto& j) {
    j["architectures"] = {"Qwen3ForCausalLM"};
    j["layer_types"] = {"full_attention", "sliding_attention"};
  });
  expect_error(run(gen(m)), {"config.json", "layer_types", "sliding_attention"});
  // A Qwen3 config over weights without its q/k norms: the missing tensor is named.
  edit_json(m / "config.json", [](auto& j) { j.erase("layer_types"); });
  expect_error(run(gen(m)), {"self_attn.q_norm.weight"});
}

// ---- weights ----

TEST_F(CliErrors, SafetensorsMissing) {
  const fs::path m = copy_model("m");
  fs::remove(m / "model.safetensors");
  expect_error(run(gen(m)), {"model.safetensors"});
}

TEST_F(CliErrors, SafetensorsTruncatedInData) {
  const fs::path m = copy_model("m");
  const auto size = fs::file_size(m / "model.safetensors");
  fs::resize_file(m / "model.safetensors", size - 1000);
  expect_error(run(gen(m)), {"model.safetensors"});
}

TEST_F(CliErrors, SafetensorsTruncatedInHeader) {
  const fs::path m = copy_model("m");
  fs::resize_file(m / "model.safetensors", 8 + safetensors_header_bytes(m / "model.safetensors") / 2);
  expect_error(run(gen(m)), {"model.safetensors", "header"});
  fs::resize_file(m / "model.safetensors", 5);  // not even the header length
  expect_error(run(gen(m)), {"model.safetensors"});
}

TEST_F(CliErrors, DataOffsetsOutsideFile) {
  const fs::path m = copy_model("m");
  const std::string name = "model.layers.1.mlp.up_proj.weight";
  edit_safetensors_header(m / "model.safetensors", [&](auto& h) {
    const uint64_t n = h[name]["data_offsets"][1].template get<uint64_t>() - h[name]["data_offsets"][0].template get<uint64_t>();
    h[name]["data_offsets"] = {uint64_t{1} << 40, (uint64_t{1} << 40) + n};
  });
  expect_error(run(gen(m)), {"model.safetensors", name});
}

TEST_F(CliErrors, UnknownDtypeNamesTensor) {
  const fs::path m = copy_model("m");
  const std::string name = "model.layers.0.self_attn.v_proj.weight";
  edit_safetensors_header(m / "model.safetensors", [&](auto& h) { h[name]["dtype"] = "F8_E4M3"; });
  expect_error(run(gen(m)), {"model.safetensors", name, "F8_E4M3"});
}

TEST_F(CliErrors, ShapeDisagreesWithConfig) {
  const fs::path m = copy_model("m");
  const std::string name = "model.layers.1.self_attn.o_proj.weight";  // [128, 128]
  edit_safetensors_header(m / "model.safetensors", [&](auto& h) { h[name]["shape"] = {64, 256}; });
  expect_error(run(gen(m)), {name, "shape"});
}

TEST_F(CliErrors, MissingTensor) {
  const fs::path m = copy_model("m");
  const std::string name = "model.layers.1.self_attn.k_proj.weight";
  edit_safetensors_header(m / "model.safetensors", [&](auto& h) { h.erase(name); });
  expect_error(run(gen(m)), {name});
  edit_safetensors_header(m / "model.safetensors", [&](auto& h) { h.erase("lm_head.weight"); });
  expect_error(run(gen(m)), {"lm_head.weight"});
}

TEST_F(CliErrors, ShardedCheckpointMissingShard) {
  const fs::path m = copy_model("m", "llama_sharded");
  const std::string shard = "model-00003-of-00007.safetensors";
  ASSERT_TRUE(fs::exists(m / shard));
  fs::remove(m / shard);
  expect_error(run(gen(m)), {shard});
}

// ---- tokenizers ----

TEST_F(CliErrors, MalformedTokenizerJsonInModelDir) {
  const fs::path m = copy_model("m");
  write_text(m / "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": [1, 2");
  expect_error(run(gen(m, {"-p", "hello", "-n", "2"})), {"tokenizer.json"});
}

TEST_F(CliErrors, TokenizeMalformedFile) {
  write_text(tmp_ / "broken_tok.json", "{\"model\": 17, ");
  expect_error(run({"tokenize", "--tokenizer", (tmp_ / "broken_tok.json").string()}, "hello"), {"broken_tok.json"});
  write_text(tmp_ / "valid_json_tok.json", "{\"model\": {\"type\": \"Unigram\"}}");
  expect_error(run({"tokenize", "--tokenizer", (tmp_ / "valid_json_tok.json").string()}, "hello"),
               {"valid_json_tok.json"});
  expect_error(run({"detokenize", "--tokenizer", (tmp_ / "broken_tok.json").string()}, "1 2"), {"broken_tok.json"});
}

// An id far past the file's tokens (the fuzzer found 99999992: 100 million empty tokens, out of
// memory) is an error naming the file and the entry.
TEST_F(CliErrors, TokenizerJsonIdFarPastItsTokens) {
  const std::string head = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": ";
  const std::string merges = "}, \"merges\": [\"a b\"]}";
  write_text(tmp_ / "wild_id_tok.json", head + "99999992" + merges + "}");
  expect_error(run({"tokenize", "--tokenizer", (tmp_ / "wild_id_tok.json").string()}, "ab"),
               {"wild_id_tok.json", "model.vocab[\"ab\"]", "99999992", "out of range"});
  write_text(tmp_ / "wild_added_tok.json", head + "2" + merges +
                                               ", \"added_tokens\": [{\"id\": 99999992, \"content\": \"<s>\"}]}");
  expect_error(run({"tokenize", "--tokenizer", (tmp_ / "wild_added_tok.json").string()}, "ab"),
               {"wild_added_tok.json", "added_tokens[0].id", "out of range"});
  // Ids a little past the tokens (room for added tokens numbered later) still load.
  write_text(tmp_ / "gap_tok.json", head + "1000" + merges + "}");
  const auto ok = run({"tokenize", "--tokenizer", (tmp_ / "gap_tok.json").string()}, "ab");
  EXPECT_EQ(ok.exit_code, 0) << ok;
}

TEST_F(CliErrors, TokenizeMissingFile) {
  expect_error(run({"tokenize", "--tokenizer", (tmp_ / "absent_tokenizer.json").string()}, "hello"),
               {"absent_tokenizer.json"});
}

TEST_F(CliErrors, TokenizeTruncatedGguf) {
  gguf::Writer w;
  w.set("general.architecture", gguf::MetaValue::make_string("llama"));
  w.set("tokenizer.ggml.model", gguf::MetaValue::make_string("llama"));
  w.set("tokenizer.ggml.tokens", gguf::MetaValue::make_strings({"<unk>", "<s>", "</s>", "a", "b", "ab"}));
  w.set("tokenizer.ggml.scores", gguf::MetaValue::make_float32s({0, 0, 0, -1, -2, -0.5}));
  w.set("tokenizer.ggml.token_type", gguf::MetaValue::make_int32s({2, 3, 3, 1, 1, 1}));
  const std::vector<float> weights(64, 0.5f);  // so the file ends in tensor data, not padding
  w.add_tensor("token_embd.weight", gguf::TensorType::F32, {64}, weights.data(), weights.size() * 4);
  const fs::path p = tmp_ / "tok.gguf";
  w.write(p.string());
  const auto size = fs::file_size(p);
  for (uintmax_t cut : {uintmax_t{3}, uintmax_t{20}, size / 2, size - 3}) {
    fs::copy_file(p, tmp_ / "cut.gguf", fs::copy_options::overwrite_existing);
    fs::resize_file(tmp_ / "cut.gguf", cut);
    expect_error(run({"tokenize", "--tokenizer", (tmp_ / "cut.gguf").string()}, "ab"), {"cut.gguf"});
  }
}

// ---- prompts and options ----

TEST_F(CliErrors, PromptLongerThanContext) {
  const fs::path model = kFixtures / "llama_gqa";
  std::string ids;
  for (int i = 0; i < 20; ++i) ids += std::to_string(i + 3) + ",";
  expect_error(run(gen(model, {"-c", "8", "--ids", ids})), {"-c", "context"});
}

TEST_F(CliErrors, TokenIdOutsideVocab) {
  const fs::path model = kFixtures / "llama_gqa";
  expect_error(run(gen(model, {"--ids", "1,512,3"})), {"512", "vocab"});
  expect_error(run({"logits", "-m", model.string(), "--ids", "99999", "--out", (tmp_ / "x.safetensors").string()}),
               {"99999"});
}

TEST_F(CliErrors, IdsNotANumber) {
  const fs::path model = kFixtures / "llama_gqa";
  expect_error(run(gen(model, {"--ids", "1,x,3"})), {"--ids", "'x'"});
  expect_error(run(gen(model, {"--ids", "1,-4"})), {"--ids", "-4"});
  write_text(tmp_ / "ids.txt", "1\n2\nseven\n");
  expect_error(run(gen(model, {"--ids-file", (tmp_ / "ids.txt").string()})), {"ids.txt", "seven"});
  expect_error(run(gen(model, {"--ids-file", (tmp_ / "absent_ids.txt").string()})), {"absent_ids.txt"});
  // A safetensors ids file with an id that does not fit int32 (would wrap to 3).
  const int64_t big[2] = {1, (int64_t{1} << 32) + 3};
  safetensors::write_file((tmp_ / "big_ids.safetensors").string(), {{"input_ids", DType::I64, {2}, big, 16}});
  expect_error(run(gen(model, {"--ids-file", (tmp_ / "big_ids.safetensors").string()})), {"big_ids.safetensors", "4294967299"});
  const int64_t negative[2] = {1, -5};
  safetensors::write_file((tmp_ / "neg_ids.safetensors").string(), {{"input_ids", DType::I64, {2}, negative, 16}});
  expect_error(run(gen(model, {"--ids-file", (tmp_ / "neg_ids.safetensors").string()})), {"-5"});
  safetensors::write_file((tmp_ / "no_ids.safetensors").string(), {{"other", DType::I64, {2}, negative, 16}});
  expect_error(run(gen(model, {"--ids-file", (tmp_ / "no_ids.safetensors").string()})), {"no_ids.safetensors", "input_ids"});
}

TEST_F(CliErrors, BothIdsAndPrompt) {
  const fs::path model = kFixtures / "llama_gqa";
  expect_error(run(gen(model, {"--ids", "1,2", "-p", "hello"})), {"--ids"});
}

TEST_F(CliErrors, LogitsWithoutOut) {
  const CliResult r = run({"logits", "-m", (kFixtures / "llama_gqa").string(), "--ids", "1,2"});
  EXPECT_EQ(r.signal, 0) << r;
  EXPECT_NE(r.exit_code, 0) << r;
  EXPECT_TRUE(r.err.starts_with("error: ")) << r;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
  EXPECT_NE(r.err.find("--out"), std::string::npos) << r;
  for (const auto& args : std::vector<std::vector<std::string>>{{"generate", "--bogus"}, {}, {"info", "-m"}}) {
    const CliResult u = run(args);
    EXPECT_EQ(u.signal, 0) << u;
    EXPECT_NE(u.exit_code, 0) << u;
    EXPECT_TRUE(u.err.starts_with("error: ")) << u;
    EXPECT_EQ(std::count(u.err.begin(), u.err.end(), '\n'), 1) << u;
  }
  expect_ok_help(run({"generate", "--help"}));
}

TEST_F(CliErrors, BadSamplingParameters) {
  const fs::path model = kFixtures / "llama_gqa";
  expect_error(run(gen(model, {"--ids", "1,2", "--temperature", "-1"})), {"temperature"});
  expect_error(run(gen(model, {"--ids", "1,2", "--top-p", "1.5"})), {"top-p"});
  expect_error(run(gen(model, {"--ids", "1,2", "--min-p", "2"})), {"min-p"});
  expect_error(run(gen(model, {"--ids", "1,2", "--top-k", "-3"})), {"top-k"});
  expect_error(run(gen(model, {"--ids", "1,2", "-n", "0", "--temperature", "-1"})), {"temperature"});
  expect_error(run(gen(model, {"--ids", "1,2", "--presence-penalty", "2.5"})), {"--presence-penalty", "[-2, 2]"});
  expect_error(run(gen(model, {"--ids", "1,2", "--frequency-penalty", "-3"})), {"--frequency-penalty", "[-2, 2]"});
  expect_error(run({"serve", "-m", model.string(), "--admit", "eager"}), {"--admit", "peak or current"});
}

TEST_F(CliErrors, CreateModelUnknownPreset) {
  expect_error(run({"create-model", "--out", (tmp_ / "new").string(), "--preset", "nope"}), {"--preset", "nope"});
  expect_error(run({"create-model", "--out", (tmp_ / "new").string(), "--dtype", "f64"}), {"--dtype", "f64"});
}

TEST_F(CliErrors, BenchZeroRepetitions) {
  expect_error(run({"bench", "-m", (kFixtures / "llama_gqa").string(), "-r", "0"}), {"-r"});
}

TEST_F(CliErrors, UnknownCommandIsNamed) {
  expect_error(run({"genrate", "-m", "x"}), {"'genrate'", "generate", "serve"});
  expect_error(run({}), {"subcommand"});
}

// bench's lists are sizes, not token ids; --cuda-weights is checked on the CPU too, which ignores it.
TEST_F(CliErrors, BenchListsAndCudaWeightsNameTheirFault) {
  const std::string m = (kFixtures / "llama_gqa").string();
  expect_error(run({"bench", "-m", m, "-p", "abc"}), {"-p", "'abc'", "token count"});
  expect_error(run({"bench", "-m", m, "-b", "-1"}), {"-b", "'-1'", "batch size"});
  expect_error(run({"bench", "-m", m, "-p", "0", "-n", "1", "--cuda-weights", "f64"}), {"--cuda-weights", "f64"});
  expect_error(run(gen(kFixtures / "llama_gqa", {"--ids", "1,2", "--cuda-weights", "f64"})), {"--cuda-weights", "f64"});
}

// A prompt id past the vocabulary names where it came from; a --prompts request that cannot fit
// the cache alone names --kv-memory.
TEST_F(CliErrors, PromptIdsAndKvMemoryAreNamed) {
  const fs::path model = kFixtures / "llama_gqa";
  expect_error(run(gen(model, {"--ids", "1,99999999", "-n", "1"})), {"--ids", "99999999", "vocabulary"});
  write_text(tmp_ / "ids.txt", "1 99999999\n");
  expect_error(run(gen(model, {"--ids-file", (tmp_ / "ids.txt").string(), "-n", "1"})), {"ids.txt", "99999999"});
  write_text(tmp_ / "p.jsonl", "{\"ids\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]}\n");
  expect_error(run(gen(model, {"--prompts", (tmp_ / "p.jsonl").string(), "--kv-memory", "1K", "-n", "4"})),
               {"--kv-memory 1K", "pages"});
}

TEST_F(CliErrors, NegativePrefillChunk) {
  const fs::path model = kFixtures / "llama_gqa";
  expect_error(run(gen(model, {"--ids", "1,2", "--prefill-chunk", "-4"})), {"--prefill-chunk", "-4"});
  write_text(tmp_ / "p.jsonl", "{\"ids\": [1, 2]}\n");
  expect_error(run(gen(model, {"--prompts", (tmp_ / "p.jsonl").string(), "--prefill-chunk", "-1"})),
               {"--prefill-chunk", "-1"});
  expect_error(run({"bench", "-m", model.string(), "-p", "8", "-n", "0", "--prefill-chunk", "-2"}), {"--prefill-chunk", "-2"});
}

}  // namespace
}  // namespace podkv::clitest
