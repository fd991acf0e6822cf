#include "train/data.h"

#include <algorithm>
#include <fstream>
#include <optional>

#include "tokenizer/fingerprint.h"
#include "tokenizer/tokenizer.h"
#include "train/token_file.h"
#include "util/bounded_read.h"
#include "util/error.h"

namespace podkv::train {

namespace {

// splitmix64: independent generator seeds from (seed, stream, index).
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t derive_seed(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b = 0) {
  return mix(mix(mix(seed ^ mix(stream)) ^ a) ^ b);
}

// The niah task's texts: those of `podkv eval --task niah` (src/eval/tasks.cpp)
// with its default needle and question, so that what is trained is what is asked.
constexpr const char* kNiahIntro =
    "Some important information is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about it afterwards.\n";
constexpr const char* kNiahQuestion = "\nWhat is the special magic number? The special magic number is";
constexpr int kNiahDigits = 7;
// The passkey-eval task's texts: those of `podkv eval --task passkey`.
constexpr const char* kPasskeyIntro =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n";
constexpr const char* kPasskeyFiller =
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
constexpr const char* kPasskeyQuestion = "\nWhat is the pass key? The pass key is";
constexpr int kPasskeyEvalDigits = 5;

std::string random_string(std::mt19937_64& rng, int length, const char* alphabet, int alphabet_size) {
  std::string s;
  for (int i = 0; i < length; ++i) s += alphabet[rng() % alphabet_size];
  return s;
}

// A key as eval's random_digits draws it: the first digit 1-9, then any.
std::string eval_key(std::mt19937_64& rng, int digits) {
  return random_string(rng, 1, "123456789", 9) + random_string(rng, digits - 1, "0123456789", 10);
}

// Appends the tokens of one text file, then EOS.
void append_text_file(const std::string& path, const Tokenizer& tokenizer, std::vector<int32_t>& stream) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot read the data file");
  const size_t before = stream.size();
  std::string line;
  int64_t line_number = 0;
  size_t bytes = 0;
  while (read_line_bounded(in, line, kMaxTextBytes, path, line_number)) {
    bytes += line.size() + 1;
    if (bytes > kMaxCorpusFileBytes)
      throw Error(path + ": larger than " + limit_string(kMaxCorpusFileBytes) + ", the limit for one data file");
    // Text never holds NUL; a binary file (a token file with a damaged magic,
    // UTF-16) would otherwise train on garbage.
    if (line.find('\0') != std::string::npos)
      throw Error(path + ": line " + std::to_string(line_number) +
                  " holds a NUL byte: neither text nor a podkv token file (no PODKVTOK magic)");
    if (!line.empty() && line.back() == '\r') line.pop_back();
    line += '\n';
    const std::vector<int32_t> ids = tokenizer.encode(line, false);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  if (stream.size() == before) throw Error(path + ": the data file holds no text");
  if (!tokenizer.eos_ids().empty()) stream.push_back(tokenizer.eos_ids().front());
}

}  // namespace

std::vector<int32_t> corpus_stream(const std::vector<std::string>& files, const Tokenizer& tokenizer) {
  std::vector<int32_t> stream;
  std::optional<TokenizerIdentity> identity;  // computed for the first token file
  for (const std::string& path : files) {
    if (!is_token_file(path)) {
      append_text_file(path, tokenizer, stream);
      continue;
    }
    if (!identity) identity = TokenizerIdentity{tokenizer.vocab_size(), tokenizer_fingerprint(tokenizer)};
    read_token_file(path, stream, &*identity);
  }
  return stream;
}

Corpus load_corpus(const std::vector<std::string>& files, const Tokenizer& tokenizer, double validation_fraction) {
  check(validation_fraction >= 0 && validation_fraction < 1, "--val-fraction: must be in [0, 1)");
  const std::vector<int32_t> stream = corpus_stream(files, tokenizer);
  Corpus c;
  const size_t held = static_cast<size_t>(static_cast<double>(stream.size()) * validation_fraction);
  c.train.assign(stream.begin(), stream.end() - static_cast<std::ptrdiff_t>(held));
  c.validation.assign(stream.end() - static_cast<std::ptrdiff_t>(held), stream.end());
  return c;
}

Task parse_task(const std::string& name) {
  if (name == "passkey") return Task::Passkey;
  if (name == "kv") return Task::KvRetrieval;
  if (name == "niah") return Task::Niah;
  if (name == "passkey-eval") return Task::PasskeyEval;
  throw Error("--synthetic: '" + name + "' is not one of passkey, kv, niah, passkey-eval");
}

const char* task_name(Task task) {
  switch (task) {
    case Task::Passkey: return "passkey";
    case Task::KvRetrieval: return "kv";
    case Task::Niah: return "niah";
    case Task::PasskeyEval: return "passkey-eval";
  }
  return "?";
}

SyntheticTasks::SyntheticTasks(const Tokenizer& tokenizer, SyntheticOptions options)
    : tokenizer_(tokenizer), options_(std::move(options)) {
  check(options_.passkey_digits >= 1 && options_.passkey_digits <= 20, "--passkey-digits: must be in 1..20");
  check(options_.kv_pairs >= 0, "--kv-pairs: must be >= 0");
  filler_ = encode("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ");
}

std::vector<int32_t> SyntheticTasks::encode(const std::string& text) const { return tokenizer_.encode(text, false); }

void SyntheticTasks::fill(int64_t count, std::mt19937_64& rng, std::vector<int32_t>& out) const {
  size_t at = rng() % filler_.size();
  for (int64_t i = 0; i < count; ++i, at = (at + 1) % filler_.size()) out.push_back(filler_[at]);
}

int64_t SyntheticTasks::min_seq(Task task) const {
  // An upper bound: the pieces without their random strings, plus one token
  // per character of every random string (each digit and letter is a token
  // of its own at worst), plus slack for merges across the boundaries, plus BOS.
  constexpr int64_t kSlack = 4;
  if (task == Task::Niah)
    return static_cast<int64_t>(encode(kNiahIntro).size() + encode(" The special magic number is . ").size() +
                                encode(kNiahQuestion).size() + encode(" .").size()) +
           2 * kNiahDigits + kSlack + 1;
  if (task == Task::PasskeyEval)
    return static_cast<int64_t>(encode(kPasskeyIntro).size() +
                                encode(" The pass key is . Remember it.  is the pass key.").size() +
                                encode(kPasskeyQuestion).size() + encode(" .").size()) +
           3 * kPasskeyEvalDigits + kSlack + 1;
  if (task == Task::Passkey)
    return static_cast<int64_t>(encode("The pass key is . Remember it.  is the pass key. ").size() +
                                encode("What is the pass key? The pass key is").size() + encode(" .").size()) +
           3 * options_.passkey_digits + kSlack + 1;
  return static_cast<int64_t>(encode("JSON data: {\"\": \"\"}. ").size() + encode("The value of key \"\" is \"").size() +
                              encode("\".").size()) + 4 * 4 + kSlack + 1;
}

void SyntheticTasks::sample(Task task, int64_t seq, std::mt19937_64& rng, int32_t* tokens, int32_t* targets,
                            const std::vector<int32_t>* text) const {
  const int64_t total = seq + 1;
  std::vector<int32_t> out;
  out.reserve(total);
  if (tokenizer_.bos_id() >= 0) out.push_back(tokenizer_.bos_id());
  std::vector<int32_t> answer;
  if (task == Task::Niah || task == Task::PasskeyEval) {
    // Eval's prompts (niah_prompt, passkey_prompt): intro · haystack · needle · haystack · question.
    const bool niah = task == Task::Niah;
    const std::string key = eval_key(rng, niah ? kNiahDigits : kPasskeyEvalDigits);
    const std::vector<int32_t> intro = encode(niah ? kNiahIntro : kPasskeyIntro);
    const std::vector<int32_t> needle =
        encode(niah ? " The special magic number is " + key + ". "
                    : " The pass key is " + key + ". Remember it. " + key + " is the pass key.");
    const std::vector<int32_t> question = encode(niah ? kNiahQuestion : kPasskeyQuestion);
    answer = encode(" " + key + ".");
    const int64_t free =
        total - static_cast<int64_t>(out.size() + intro.size() + needle.size() + question.size() + answer.size());
    if (free < 0)
      throw Error("--seq-len: " + std::to_string(seq) + " is too short for the " + task_name(task) + " task (needs " +
                  std::to_string(total - free) + " tokens)");
    // niah: a random window of the text; passkey-eval: eval's filler from its start, cut to fit.
    std::vector<int32_t> haystack;
    if (niah) {
      if (text == nullptr || static_cast<int64_t>(text->size()) < free)
        throw Error("--data: the niah task needs training text for its haystack (" + std::to_string(free) +
                    " tokens per sample, " + std::to_string(text == nullptr ? 0 : text->size()) + " given)");
      const int64_t offset = static_cast<int64_t>(rng() % static_cast<uint64_t>(text->size() - free + 1));
      haystack.assign(text->begin() + offset, text->begin() + offset + free);
    } else {
      const std::vector<int32_t> unit = encode(kPasskeyFiller);
      while (static_cast<int64_t>(haystack.size()) < free) haystack.insert(haystack.end(), unit.begin(), unit.end());
      haystack.resize(free);
    }
    const int64_t before = static_cast<int64_t>(rng() % static_cast<uint64_t>(free + 1));
    out.insert(out.end(), intro.begin(), intro.end());
    out.insert(out.end(), haystack.begin(), haystack.begin() + before);
    out.insert(out.end(), needle.begin(), needle.end());
    out.insert(out.end(), haystack.begin() + before, haystack.end());
    out.insert(out.end(), question.begin(), question.end());
  } else if (task == Task::Passkey) {
    const std::string key = random_string(rng, options_.passkey_digits, "0123456789", 10);
    const std::vector<int32_t> needle = encode("The pass key is " + key + ". Remember it. " + key + " is the pass key. ");
    const std::vector<int32_t> question = encode("What is the pass key? The pass key is");
    answer = encode(" " + key + ".");
    const int64_t free = total - static_cast<int64_t>(out.size() + needle.size() + question.size() + answer.size());
    if (free < 0)
      throw Error("--seq-len: " + std::to_string(seq) + " is too short for the passkey task (needs " +
                  std::to_string(total - free) + " tokens)");
    const int64_t before = static_cast<int64_t>(rng() % static_cast<uint64_t>(free + 1));
    fill(before, rng, out);
    out.insert(out.end(), needle.begin(), needle.end());
    fill(free - before, rng, out);
    out.insert(out.end(), question.begin(), question.end());
  } else {
    static const char kHex[] = "0123456789abcdef";
    std::vector<std::pair<std::string, std::vector<int32_t>>> pairs;  // key, its tokens in the JSON
    const std::vector<int32_t> head = encode("JSON data: {"), tail = encode("}. ");
    const int64_t reserve_question = static_cast<int64_t>(encode("The value of key \"ffff\" is \"").size() +
                                                          encode("ffff\".").size()) + 2;
    int64_t used = static_cast<int64_t>(out.size() + head.size() + tail.size()) + reserve_question;
    std::vector<std::string> values;
    for (;;) {
      if (options_.kv_pairs > 0 && static_cast<int>(pairs.size()) == options_.kv_pairs) break;
      const std::string key = random_string(rng, 4, kHex, 16), value = random_string(rng, 4, kHex, 16);
      std::vector<int32_t> piece = encode((pairs.empty() ? "\"" : ", \"") + key + "\": \"" + value + "\"");
      if (used + static_cast<int64_t>(piece.size()) > total) break;
      used += static_cast<int64_t>(piece.size());
      pairs.emplace_back(key, std::move(piece));
      values.push_back(value);
    }
    if (pairs.empty() || (options_.kv_pairs > 0 && static_cast<int>(pairs.size()) < options_.kv_pairs))
      throw Error("--seq-len: " + std::to_string(seq) + " is too short for the kv task with " +
                  std::to_string(std::max(1, options_.kv_pairs)) + " pairs");
    const size_t pick = rng() % pairs.size();
    const std::vector<int32_t> question = encode("The value of key \"" + pairs[pick].first + "\" is \"");
    answer = encode(values[pick] + "\".");
    int64_t body = static_cast<int64_t>(head.size() + tail.size() + question.size() + answer.size());
    for (const auto& p : pairs) body += static_cast<int64_t>(p.second.size());
    const int64_t free = total - static_cast<int64_t>(out.size()) - body;
    if (free < 0) throw Error("--seq-len: " + std::to_string(seq) + " is too short for the kv task");
    fill(free, rng, out);
    out.insert(out.end(), head.begin(), head.end());
    for (const auto& p : pairs) out.insert(out.end(), p.second.begin(), p.second.end());
    out.insert(out.end(), tail.begin(), tail.end());
    out.insert(out.end(), question.begin(), question.end());
  }
  const int64_t answer_start = static_cast<int64_t>(out.size());
  out.insert(out.end(), answer.begin(), answer.end());
  check(static_cast<int64_t>(out.size()) == total, "synthetic sample: wrong length");
  for (int64_t i = 0; i < seq; ++i) {
    tokens[i] = out[i];
    targets[i] = i + 1 >= answer_start ? out[i + 1] : -1;
  }
}

BatchSource::BatchSource(const Corpus* corpus, const SyntheticTasks* tasks, double synthetic_fraction, uint64_t seed)
    : corpus_(corpus), tasks_(tasks), synthetic_fraction_(synthetic_fraction), seed_(seed) {
  check(synthetic_fraction >= 0 && synthetic_fraction <= 1, "--synthetic-fraction: must be in [0, 1]");
  check(synthetic_fraction < 1 || (tasks != nullptr && !tasks->options().tasks.empty()),
        "--synthetic-fraction 1 needs --synthetic TASK");
  check(synthetic_fraction == 0 || (tasks != nullptr && !tasks->options().tasks.empty()),
        "--synthetic-fraction: > 0 needs --synthetic TASK");
  check(synthetic_fraction == 1 || corpus != nullptr, "--data: no training text given");
  if (tasks != nullptr)
    for (Task t : tasks->options().tasks)
      check(t != Task::Niah || (corpus != nullptr && !corpus->train.empty()),
            "--synthetic niah: needs --data (its haystack is the training text)");
}

// The haystack of niah samples: the held-out text where there is one (evaluation), else the training text.
const std::vector<int32_t>* BatchSource::haystack(bool evaluation) const {
  if (corpus_ == nullptr) return nullptr;
  return evaluation && has_validation_text() ? &corpus_->validation : &corpus_->train;
}

void BatchSource::text_span(const std::vector<int32_t>& stream, int64_t start, int64_t seq, int32_t* tokens,
                            int32_t* targets) const {
  for (int64_t i = 0; i < seq; ++i) {
    tokens[i] = stream[start + i];
    targets[i] = stream[start + i + 1];
  }
}

Batch BatchSource::train_batch(int64_t step, int micro, int64_t batch, int64_t seq) const {
  Batch b{batch, seq, std::vector<int32_t>(batch * seq), std::vector<int32_t>(batch * seq)};
  std::mt19937_64 rng(derive_seed(seed_, 1, static_cast<uint64_t>(step), static_cast<uint64_t>(micro)));
  const int64_t windows = corpus_ != nullptr ? (static_cast<int64_t>(corpus_->train.size()) - 1) / seq : 0;
  if (synthetic_fraction_ < 1 && windows < 1)
    throw Error("--data: the training text has " + std::to_string(corpus_->train.size()) +
                " tokens, fewer than one sequence (--seq-len " + std::to_string(seq) + " + 1)");
  for (int64_t i = 0; i < batch; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    if (u < synthetic_fraction_) {
      const auto& tasks = tasks_->options().tasks;
      synthetic_row(tasks[rng() % tasks.size()], seq, rng, &b.tokens[i * seq], &b.targets[i * seq], false);
    } else {
      text_span(corpus_->train, static_cast<int64_t>(rng() % static_cast<uint64_t>(windows)) * seq, seq,
                &b.tokens[i * seq], &b.targets[i * seq]);
    }
  }
  return b;
}

void BatchSource::synthetic_row(Task task, int64_t seq, std::mt19937_64& rng, int32_t* tokens, int32_t* targets,
                                bool evaluation) const {
  // A sample of `len` tokens, then (when shorter than the sequence) a window of the text.
  int64_t len = seq;
  const int64_t shortest = std::max(synthetic_min_len_, tasks_->min_seq(task));
  if (synthetic_min_len_ > 0 && shortest < seq)
    len = shortest + static_cast<int64_t>(rng() % static_cast<uint64_t>(seq - shortest + 1));
  tasks_->sample(task, len, rng, tokens, targets, haystack(evaluation));
  if (len == seq) return;
  const std::vector<int32_t>& text = *haystack(evaluation);
  const int64_t rest = seq - len, room = static_cast<int64_t>(text.size()) - rest;
  if (room < 1)
    throw Error("--synthetic-min-len: the " + std::string(evaluation ? "held-out" : "training") + " text has " +
                std::to_string(text.size()) + " tokens, too few to fill a sequence after a sample");
  text_span(text, static_cast<int64_t>(rng() % static_cast<uint64_t>(room)), rest, tokens + len, targets + len);
  if (evaluation) std::fill(targets + len, targets + seq, -1);  // accuracy counts the answer alone
}

void BatchSource::set_synthetic_min_len(int64_t n) {
  if (n < 0) throw Error("--synthetic-min-len: must be >= 0, not " + std::to_string(n));
  if (n > 0 && tasks_ == nullptr) throw Error("--synthetic-min-len: needs --synthetic tasks");
  if (n > 0 && (corpus_ == nullptr || corpus_->train.size() < 2))
    throw Error("--synthetic-min-len: needs training text (--data) to fill a sequence after a shorter sample");
  synthetic_min_len_ = n;
}

bool BatchSource::has_validation_text() const {
  return corpus_ != nullptr && corpus_->validation.size() > 1;
}

Batch BatchSource::validation_batch(int64_t index, int64_t batch, int64_t seq) const {
  Batch b{batch, seq, std::vector<int32_t>(batch * seq), std::vector<int32_t>(batch * seq)};
  if (has_validation_text()) {
    const int64_t windows = (static_cast<int64_t>(corpus_->validation.size()) - 1) / seq;
    if (windows < 1)
      throw Error("--val-fraction: the held-out text has " + std::to_string(corpus_->validation.size()) +
                  " tokens, fewer than one sequence (--seq-len " + std::to_string(seq) + " + 1)");
    for (int64_t i = 0; i < batch; ++i)
      text_span(corpus_->validation, (index * batch + i) % windows * seq, seq, &b.tokens[i * seq], &b.targets[i * seq]);
    return b;
  }
  check(tasks_ != nullptr && !tasks_->options().tasks.empty(), "no validation data (--val-fraction 0 and no --synthetic)");
  std::mt19937_64 rng(derive_seed(seed_, 2, static_cast<uint64_t>(index)));
  const auto& tasks = tasks_->options().tasks;
  for (int64_t i = 0; i < batch; ++i)
    tasks_->sample(tasks[(index * batch + i) % static_cast<int64_t>(tasks.size())], seq, rng, &b.tokens[i * seq],
                   &b.targets[i * seq], haystack(true));
  return b;
}

Batch BatchSource::task_batch(Task task, int64_t index, int64_t batch, int64_t seq) const {
  check(tasks_ != nullptr, "no synthetic tasks");
  Batch b{batch, seq, std::vector<int32_t>(batch * seq), std::vector<int32_t>(batch * seq)};
  std::mt19937_64 rng(derive_seed(seed_, 3 + static_cast<uint64_t>(task), static_cast<uint64_t>(index)));
  for (int64_t i = 0; i < batch; ++i) synthetic_row(task, seq, rng, &b.tokens[i * seq], &b.targets[i * seq], true);
  return b;
}

}  // namespace podkv::train
