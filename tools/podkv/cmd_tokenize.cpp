// podkv tokenize / detokenize: text on stdin to ids on stdout, and back;
// podkv tokenize-data: training text to a binary token file.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "tokenizer/fingerprint.h"
#include "train/data.h"
#include "train/token_file.h"
#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv::cli {

namespace {

struct TokenizeCommand {
  std::string tokenizer;
  bool no_bos = false;
  bool jsonl = false;
};

std::string read_stdin() {
  return read_stream_bounded(std::cin, kMaxTextBytes, "stdin");
}

void print_ids(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  std::printf("%s\n", line.c_str());
}

// Calls `handle(value, line_number)` for `field` of each non-empty stdin line,
// parsed as a JSON object; errors name the line and the expected shape.
template <typename Handle>
void for_each_jsonl_line(const std::string& field, const std::string& expected, Handle handle) {
  std::string line;
  int64_t number = 0;
  while (read_line_bounded(std::cin, line, kMaxJsonLineBytes, "stdin", number)) {
    const int n = static_cast<int>(number);
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw Error("stdin line " + std::to_string(n) + ": invalid JSON");
    }
    if (!j.is_object() || !j.contains(field)) throw Error("stdin line " + std::to_string(n) + ": expected " + expected);
    handle(j[field], n);
  }
}

void run_tokenize(const TokenizeCommand& o) {
  auto tok = load_tokenizer(o.tokenizer);
  if (!o.jsonl) {
    print_ids(tok->encode(read_stdin(), !o.no_bos));
    return;
  }
  const std::string expected = "{\"text\": string}";
  for_each_jsonl_line("text", expected, [&](const nlohmann::json& text, int n) {
    if (!text.is_string()) throw Error("stdin line " + std::to_string(n) + ": expected " + expected);
    nlohmann::json out = {{"ids", tok->encode(text.get<std::string>(), !o.no_bos)}};
    std::printf("%s\n", out.dump().c_str());
  });
}

void run_detokenize(const TokenizeCommand& o) {
  auto tok = load_tokenizer(o.tokenizer);
  auto decode = [&](const std::vector<int32_t>& ids) {
    for (int32_t id : ids)
      if (id >= tok->vocab_size()) throw Error("token id " + std::to_string(id) + " is outside the vocabulary (" + std::to_string(tok->vocab_size()) + ")");
    return tok->decode(ids);
  };
  if (!o.jsonl) {
    std::string text = read_stdin();
    for (char& ch : text) if (ch == ' ' || ch == '\n' || ch == '\t') ch = ',';
    const std::string s = decode(parse_id_list(text, "stdin"));
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::printf("\n");
    return;
  }
  const std::string expected = "{\"ids\": [...]}";
  for_each_jsonl_line("ids", expected, [&](const nlohmann::json& list, int n) {
    if (!list.is_array()) throw Error("stdin line " + std::to_string(n) + ": expected " + expected);
    std::vector<int32_t> ids;
    for (const auto& v : list) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0) throw Error("stdin line " + std::to_string(n) + ": ids must be non-negative integers");
      ids.push_back(v.get<int32_t>());
    }
    nlohmann::json out = {{"text", decode(ids)}};
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  });
}

struct TokenizeDataCommand {
  std::string tokenizer, model;
  std::vector<std::string> data;
  std::string out;
};

// The stream podkv train --data builds from the same files, written once.
void run_tokenize_data(const TokenizeDataCommand& o) {
  if (o.tokenizer.empty() == o.model.empty()) throw Error("give one of --tokenizer and -m");
  std::unique_ptr<Tokenizer> tok;
  if (!o.tokenizer.empty()) {
    tok = load_tokenizer(o.tokenizer);
  } else {
    tok = load_model_tokenizer(*Model::load(o.model));
    if (!tok) throw Error(o.model + ": the model has no tokenizer (tokenizer.json or tokenizer.model)");
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> stream = train::corpus_stream(o.data, *tok);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const train::TokenFileHeader h =
      train::write_token_file(o.out, stream, tok->vocab_size(), tokenizer_fingerprint(*tok));
  const uint64_t bytes = train::kTokenFileHeaderBytes + h.tokens * h.id_bytes;
  std::fprintf(stderr,
               "wrote %s: %llu tokens (uint%u ids, vocabulary %u, tokenizer %016llx), %llu bytes, "
               "from %zu file%s in %.2f s (%.0f tokens/s)\n",
               o.out.c_str(), static_cast<unsigned long long>(h.tokens), h.id_bytes * 8, h.vocab_size,
               static_cast<unsigned long long>(h.fingerprint), static_cast<unsigned long long>(bytes), o.data.size(),
               o.data.size() == 1 ? "" : "s", seconds, seconds > 0 ? static_cast<double>(h.tokens) / seconds : 0.0);
}

}  // namespace

void add_tokenize_commands(CLI::App& app) {
  auto o = std::make_shared<TokenizeCommand>();
  CLI::App* tok = app.add_subcommand("tokenize", "text on stdin to token ids on stdout");
  tok->add_option("--tokenizer", o->tokenizer, "tokenizer.json, tokenizer.model, .gguf file or model directory")->required();
  tok->add_flag("--no-bos", o->no_bos, "do not add BOS");
  tok->add_flag("--jsonl", o->jsonl, "read lines {\"text\": ...}, write lines {\"ids\": [...]}");
  tok->callback([o] { run_tokenize(*o); });

  auto d = std::make_shared<TokenizeCommand>();
  CLI::App* detok = app.add_subcommand("detokenize", "token ids on stdin (spaces, commas or newlines) to text");
  detok->add_option("--tokenizer", d->tokenizer, "tokenizer.json, tokenizer.model, .gguf file or model directory")->required();
  detok->add_flag("--jsonl", d->jsonl, "read lines {\"ids\": [...]}, write lines {\"text\": ...}");
  detok->callback([d] { run_detokenize(*d); });

  auto t = std::make_shared<TokenizeDataCommand>();
  CLI::App* data = app.add_subcommand("tokenize-data", "training text to a binary token file for train/adapt --data");
  data->add_option("--tokenizer", t->tokenizer, "tokenizer.json, tokenizer.model, .gguf file or directory");
  data->add_option("-m,--model", t->model, "take the tokenizer of this model (as adapt does)");
  data->add_option("--data", t->data, "text files (or token files), in order, as for train --data")->required();
  data->add_option("--out", t->out, "token file to write")->required();
  data->callback([t] { run_tokenize_data(*t); });
}

}  // namespace podkv::cli
