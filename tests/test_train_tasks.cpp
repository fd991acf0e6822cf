// The training tasks in eval's prompt formats (train/data.h): niah, a needle
// in a window of the training text, token for token the prompt `podkv eval
// --task niah` builds (eval/tasks.h's niah_prompt with the same haystack, key
// and depth); passkey-eval, the prompt of `podkv eval --task passkey` (the
// same tokens as passkey_prompt's at the same length and depth, but for the
// key). The loss counts the answer only.
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <string>
#include <vector>

#include "eval/tasks.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "util/error.h"

namespace podkv::train {
namespace {

const std::string kModel = std::string(PODKV_SOURCE_DIR) + "/models/podkv-ref";
const char* kIntro =
    "Some important information is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about it afterwards.\n";
const char* kQuestion = "\nWhat is the special magic number? The special magic number is";

// Varied prose, so that any window of it is findable in the stream.
std::vector<int32_t> prose(const Tokenizer& tok) {
  static const char* kWords[] = {"river", "hill", "lantern", "orchard", "stone", "winter", "harbour", "letter"};
  std::string text;
  for (int i = 0; i < 400; ++i)
    text += "Sentence " + std::to_string(i) + " tells of the " + kWords[i % 8] + " and the " + kWords[(i * 3 + 1) % 8] +
            ". ";
  return tok.encode(text, false);
}

template <typename It>
int64_t find(It begin, It end, const std::vector<int32_t>& what) {
  const It at = std::search(begin, end, what.begin(), what.end());
  return at == end ? -1 : static_cast<int64_t>(at - begin);
}

// The synthetic tasks of one task, its default settings.
SyntheticTasks one_task(const Tokenizer& tok, Task task) {
  SyntheticOptions so;
  so.tasks = {task};
  return SyntheticTasks(tok, so);
}

// f() throws an Error whose message names `what`.
template <typename F>
void expect_error(F f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error naming " << what;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(TrainTasks, NiahSampleIsEvalsPromptOverATextWindow) {
  auto tok = load_tokenizer(kModel);
  Corpus corpus;
  corpus.train = prose(*tok);
  const SyntheticTasks tasks = one_task(*tok, Task::Niah);
  const BatchSource source(&corpus, &tasks, 1.0, 7);
  const int64_t batch = 32, seq = 300;
  const Batch b = source.train_batch(0, 0, batch, seq);
  const std::vector<int32_t> intro = tok->encode(kIntro, false), question = tok->encode(kQuestion, false);
  std::vector<double> depths;
  for (int64_t r = 0; r < batch; ++r) {
    // The sample's seq + 1 tokens: the inputs, then the last target.
    std::vector<int32_t> all(b.tokens.begin() + r * seq, b.tokens.begin() + (r + 1) * seq);
    all.push_back(b.targets[(r + 1) * seq - 1]);
    ASSERT_EQ(all[0], tok->bos_id());
    ASSERT_TRUE(std::equal(intro.begin(), intro.end(), all.begin() + 1)) << "row " << r;
    // The needle's 7 digits, asked for at the end.
    std::smatch m;
    const std::string text = tok->decode(all);
    ASSERT_TRUE(std::regex_search(text, m, std::regex("The special magic number is ([1-9][0-9]{6})\\. "))) << text;
    const std::string key = m[1];
    const std::vector<int32_t> needle = tok->encode(" The special magic number is " + key + ". ", false);
    const std::vector<int32_t> answer = tok->encode(" " + key + ".", false);
    const int64_t at = find(all.begin(), all.end(), needle);
    const int64_t asked = static_cast<int64_t>(all.size() - answer.size() - question.size());
    ASSERT_GE(at, 0) << text;
    ASSERT_TRUE(std::equal(question.begin(), question.end(), all.begin() + asked)) << text;
    ASSERT_TRUE(std::equal(answer.begin(), answer.end(), all.end() - static_cast<int64_t>(answer.size()))) << text;
    // The haystack around the needle is one window of the training text.
    std::vector<int32_t> haystack(all.begin() + 1 + static_cast<int64_t>(intro.size()), all.begin() + at);
    haystack.insert(haystack.end(), all.begin() + at + static_cast<int64_t>(needle.size()), all.begin() + asked);
    EXPECT_GE(find(corpus.train.begin(), corpus.train.end(), haystack), 0) << "row " << r;
    const int64_t before = at - 1 - static_cast<int64_t>(intro.size());
    depths.push_back(static_cast<double>(before) / static_cast<double>(haystack.size()));
    // Eval's prompt over this haystack (one window: offset 0), with this key, at this depth.
    eval::TaskSettings settings;
    settings.task = "niah";
    settings.answer = key;
    const eval::GridPrompt p =
        eval::niah_prompt(*tok, tok->bos_id(), haystack, asked + static_cast<int64_t>(question.size()),
                          100.0 * static_cast<double>(before) / static_cast<double>(haystack.size()), settings, 1);
    EXPECT_EQ(p.tokens, std::vector<int32_t>(all.begin(), all.begin() + asked + static_cast<int64_t>(question.size())))
        << "row " << r;
    EXPECT_EQ(p.answer, key);
    // The loss counts the answer only: the targets from the question's last token on.
    for (int64_t i = 0; i < seq; ++i) {
      const int32_t target = b.targets[r * seq + i];
      if (i + 1 >= static_cast<int64_t>(all.size() - answer.size())) EXPECT_EQ(target, all[i + 1]);
      else EXPECT_EQ(target, -1) << "row " << r << " position " << i;
    }
  }
  // The needle moves through the haystack.
  EXPECT_LT(*std::min_element(depths.begin(), depths.end()), 0.25);
  EXPECT_GT(*std::max_element(depths.begin(), depths.end()), 0.75);
}

TEST(TrainTasks, NiahNeedsTextAndRoom) {
  auto tok = load_tokenizer(kModel);
  const SyntheticTasks tasks = one_task(*tok, Task::Niah);
  EXPECT_EQ(parse_task("niah"), Task::Niah);
  EXPECT_STREQ(task_name(Task::Niah), "niah");
  expect_error([&] { BatchSource source(nullptr, &tasks, 1.0, 1); }, "--synthetic niah");
  Corpus corpus;
  corpus.train = prose(*tok);
  const BatchSource source(&corpus, &tasks, 1.0, 1);
  expect_error([&] { source.train_batch(0, 0, 1, tasks.min_seq(Task::Niah) - 20); }, "--seq-len");
  EXPECT_NO_THROW(source.train_batch(0, 0, 2, tasks.min_seq(Task::Niah)));
  // Held-out text is the haystack of evaluation samples.
  corpus.validation = std::vector<int32_t>(corpus.train.end() - 2000, corpus.train.end());
  corpus.train.resize(corpus.train.size() - 2000);
  const BatchSource held(&corpus, &tasks, 1.0, 1);
  EXPECT_NO_THROW(held.task_batch(Task::Niah, 0, 4, 200));
}

// --synthetic-min-len: samples of every length from the minimum to the sequence, each a whole
// eval-format prompt and answer from the row's start, the rest of the row a window of the training
// text with its loss counted.
TEST(TrainTasks, SyntheticMinLenMixesSampleLengthsWithText) {
  auto tok = load_tokenizer(kModel);
  Corpus corpus;
  corpus.train = prose(*tok);
  const SyntheticTasks tasks = one_task(*tok, Task::PasskeyEval);
  BatchSource source(&corpus, &tasks, 1.0, 5);
  const int64_t batch = 48, seq = 400, min_len = 150;
  source.set_synthetic_min_len(min_len);
  const Batch b = source.train_batch(3, 0, batch, seq);
  std::vector<int64_t> lengths;
  for (int64_t r = 0; r < batch; ++r) {
    const int32_t* tokens = &b.tokens[r * seq];
    const int32_t* targets = &b.targets[r * seq];
    ASSERT_EQ(tokens[0], tok->bos_id()) << "row " << r;
    // The answer " 12345." is the first run of counted targets; the sample ends with it.
    int64_t first = 0;
    while (first < seq && targets[first] == -1) ++first;
    ASSERT_LT(first, seq) << "row " << r;
    std::vector<int32_t> sample(tokens, tokens + first + 1);
    std::smatch m;
    const std::string prompt = tok->decode(sample);
    ASSERT_TRUE(std::regex_search(prompt, m, std::regex("The pass key is ([1-9][0-9]{4})\\. Remember it\\."))) << prompt;
    const std::vector<int32_t> answer = tok->encode(" " + std::string(m[1]) + ".", false);
    const int64_t len = first + static_cast<int64_t>(answer.size());  // the sample's tokens in the row
    ASSERT_LE(len, seq) << "row " << r;
    for (size_t k = 0; k < answer.size(); ++k) EXPECT_EQ(targets[first + static_cast<int64_t>(k)], answer[k]) << "row " << r;
    lengths.push_back(len);
    if (len == seq) continue;
    // The rest: one window of the training text, every target counted.
    const std::vector<int32_t> rest(tokens + len, tokens + seq);
    const int64_t at = find(corpus.train.begin(), corpus.train.end(), rest);
    ASSERT_GE(at, 0) << "row " << r;
    for (int64_t j = len; j < seq; ++j) EXPECT_EQ(targets[j], corpus.train[at + (j - len) + 1]) << "row " << r;
  }
  // Lengths from the minimum to the sequence, spread between them.
  EXPECT_GE(*std::min_element(lengths.begin(), lengths.end()), min_len);
  EXPECT_LT(*std::min_element(lengths.begin(), lengths.end()), min_len + 60);
  EXPECT_GT(*std::max_element(lengths.begin(), lengths.end()), seq - 60);
  // Without text there is nothing to fill the rest with; a negative length is refused.
  BatchSource no_text(nullptr, &tasks, 1.0, 5);
  expect_error([&] { no_text.set_synthetic_min_len(100); }, "--synthetic-min-len");
  expect_error([&] { source.set_synthetic_min_len(-1); }, "--synthetic-min-len");
}

// Accuracy samples take the training samples' lengths; the held-out text after a
// shorter sample is not scored, so accuracy counts the answer alone.
TEST(TrainTasks, SyntheticMinLenGivesAccuracySamplesOfEveryLength) {
  auto tok = load_tokenizer(kModel);
  Corpus corpus;
  corpus.train = prose(*tok);
  corpus.validation = std::vector<int32_t>(corpus.train.begin(), corpus.train.begin() + 2000);
  const SyntheticTasks tasks = one_task(*tok, Task::PasskeyEval);
  BatchSource source(&corpus, &tasks, 1.0, 5);
  const int64_t batch = 48, seq = 400, min_len = 150;
  const auto answer_ends = [&](const Batch& b) {  // per row: one past the last counted target
    std::vector<int64_t> ends;
    for (int64_t r = 0; r < batch; ++r) {
      const int32_t* targets = &b.targets[r * seq];
      int64_t first = 0;
      while (first < seq && targets[first] == -1) ++first;
      int64_t end = first;
      while (end < seq && targets[end] != -1) ++end;
      for (int64_t j = end; j < seq; ++j) EXPECT_EQ(targets[j], -1) << "row " << r << ": the text after the answer is scored";
      EXPECT_GT(end, first) << "row " << r << ": no answer";
      ends.push_back(end);
    }
    return ends;
  };
  for (int64_t end : answer_ends(source.task_batch(Task::PasskeyEval, 0, batch, seq))) EXPECT_EQ(end, seq);
  source.set_synthetic_min_len(min_len);
  const Batch b = source.task_batch(Task::PasskeyEval, 0, batch, seq);
  const std::vector<int64_t> ends = answer_ends(b);
  EXPECT_GE(*std::min_element(ends.begin(), ends.end()), min_len);
  EXPECT_LT(*std::min_element(ends.begin(), ends.end()), min_len + 60);
  EXPECT_GT(*std::max_element(ends.begin(), ends.end()), seq - 60);
  for (int64_t r = 0; r < batch; ++r) {  // the rest of a shorter row: a window of the held-out text
    if (ends[r] == seq) continue;
    const std::vector<int32_t> rest(b.tokens.begin() + r * seq + ends[r], b.tokens.begin() + (r + 1) * seq);
    EXPECT_GE(find(corpus.validation.begin(), corpus.validation.end(), rest), 0) << "row " << r;
  }
}

TEST(TrainTasks, PasskeyEvalSampleIsEvalsPrompt) {
  auto tok = load_tokenizer(kModel);
  const SyntheticTasks tasks = one_task(*tok, Task::PasskeyEval);
  EXPECT_EQ(parse_task("passkey-eval"), Task::PasskeyEval);
  const BatchSource source(nullptr, &tasks, 1.0, 3);  // needs no text
  const int64_t batch = 16, seq = 400;
  const Batch b = source.train_batch(0, 0, batch, seq);
  for (int64_t r = 0; r < batch; ++r) {
    std::vector<int32_t> all(b.tokens.begin() + r * seq, b.tokens.begin() + (r + 1) * seq);
    all.push_back(b.targets[(r + 1) * seq - 1]);
    std::smatch m;
    const std::string text = tok->decode(all);
    ASSERT_TRUE(std::regex_search(text, m, std::regex("The pass key is ([1-9][0-9]{4})\\. Remember it\\. \\1 is the pass key\\.")))
        << text;
    const std::string key = m[1];
    const std::vector<int32_t> needle =
        tok->encode(" The pass key is " + key + ". Remember it. " + key + " is the pass key.", false);
    const std::vector<int32_t> answer = tok->encode(" " + key + ".", false);
    const int64_t at = find(all.begin(), all.end(), needle), prompt = static_cast<int64_t>(all.size() - answer.size());
    ASSERT_GE(at, 0) << text;
    ASSERT_TRUE(std::equal(answer.begin(), answer.end(), all.begin() + prompt)) << text;
    for (int64_t i = 0; i < seq; ++i)
      EXPECT_EQ(b.targets[r * seq + i], i + 1 >= prompt ? all[i + 1] : -1) << "row " << r << " position " << i;
    // Eval's prompt of the same length with the needle at the same place: the same tokens but for the key.
    const std::vector<int32_t> intro = tok->encode(
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there.\n",
        false);
    const std::vector<int32_t> question = tok->encode("\nWhat is the pass key? The pass key is", false);
    const int64_t haystack = prompt - 1 - static_cast<int64_t>(intro.size() + needle.size() + question.size());
    const int64_t before = at - 1 - static_cast<int64_t>(intro.size());
    // (Eval draws its own key: take a seed whose key has as many tokens as this one.)
    eval::GridPrompt p;
    for (uint64_t seed = 1; seed < 200 && p.needle_tokens != static_cast<int64_t>(needle.size()); ++seed)
      p = eval::passkey_prompt(*tok, tok->bos_id(), prompt,
                               100.0 * static_cast<double>(before) / static_cast<double>(haystack), seed);
    ASSERT_EQ(p.tokens.size(), static_cast<size_t>(prompt));
    ASSERT_EQ(p.needle_position, at);
    ASSERT_EQ(p.needle_tokens, static_cast<int64_t>(needle.size()));
    for (int64_t i = 0; i < prompt; ++i) {
      if (i < at || i >= at + static_cast<int64_t>(needle.size())) {
        ASSERT_EQ(p.tokens[i], all[i]) << "row " << r << " at " << i;
      }
    }
  }
}

}  // namespace
}  // namespace podkv::train
