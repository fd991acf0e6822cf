// Training data: text files (or token files made from them) as one token
// stream packed into
// sequences of a chosen length, and generated long-context tasks (passkey
// retrieval in filler text, key-value retrieval among many keys, a needle in
// a haystack of the training text) whose loss counts the answer tokens only. Batches are a pure function of (seed, step,
// micro-batch), so a resumed run sees exactly the data it would have seen.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace podkv {
class Tokenizer;
}

namespace podkv::train {

// One batch: tokens and targets [batch, seq]; targets[i] is the next token,
// or -1 where no loss is counted.
struct Batch {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> tokens, targets;
};

// The token stream of data files, in order: a text file is tokenised line by
// line (no BOS) and followed by the tokenizer's EOS (when it has one); a token
// file (train/token_file.h, recognised by its magic) contributes its ids as
// they are (the same stream, tokenised earlier). Throws Error naming the file
// when it cannot be read, holds no tokens, is binary without the token file
// magic (a NUL byte), or is a token file that is truncated, corrupt or made by
// another tokenizer.
std::vector<int32_t> corpus_stream(const std::vector<std::string>& files, const Tokenizer& tokenizer);

// The stream of corpus_stream, with its last `validation_fraction` held out
// for evaluation.
struct Corpus {
  std::vector<int32_t> train, validation;
};
Corpus load_corpus(const std::vector<std::string>& files, const Tokenizer& tokenizer, double validation_fraction);

enum class Task { Passkey, KvRetrieval, Niah, PasskeyEval };
// "passkey", "kv", "niah", "passkey-eval"; throws Error naming --synthetic otherwise.
Task parse_task(const std::string& name);
const char* task_name(Task task);

struct SyntheticOptions {
  std::vector<Task> tasks;  // mixed uniformly
  int passkey_digits = 5;
  int kv_pairs = 0;         // key-value pairs per sample; 0 = as many as fit
};

// Generates one sample of seq + 1 tokens (inputs are the first seq, targets
// the last seq) with the loss on the answer only.
//   passkey: [BOS] filler · "The pass key is 12345. Remember it. 12345 is the
//            pass key. " · filler · "What is the pass key? The pass key is" → " 12345."
//            (the needle at a random depth; filler is the classic repeated sentences)
//   kv:      [BOS] filler · "JSON data: {"a3f9": "07bc", ...}. " ·
//            "The value of key "a3f9" is "" → "07bc"."   (the key picked at random)
//   niah:    the prompt of `podkv eval --task niah` with its default needle and
//            question: [BOS] "Some important information is hidden ...\n" ·
//            text · " The special magic number is 4721905. " · text ·
//            "\nWhat is the special magic number? The special magic number is" →
//            " 4721905." (7 digits; the haystack is a random window of `text`,
//            the training or held-out stream, the needle at a random depth)
//   passkey-eval: the prompt of `podkv eval --task passkey`: [BOS] "There is an
//            important info hidden ...\n" · filler · " The pass key is 12345.
//            Remember it. 12345 is the pass key." · filler · "\nWhat is the pass
//            key? The pass key is" → " 12345." (5 digits; eval's filler, which
//            starts at its first sentence, the needle at a random depth)
class SyntheticTasks {
 public:
  SyntheticTasks(const Tokenizer& tokenizer, SyntheticOptions options);
  // tokens, targets get seq values each. Throws Error naming --seq-len when
  // seq is too short for the task, or --data when niah has no text (`text`
  // null or shorter than its haystack).
  void sample(Task task, int64_t seq, std::mt19937_64& rng, int32_t* tokens, int32_t* targets,
              const std::vector<int32_t>* text = nullptr) const;
  const SyntheticOptions& options() const { return options_; }
  // Fewest tokens a sample of `task` needs.
  int64_t min_seq(Task task) const;

 private:
  std::vector<int32_t> encode(const std::string& text) const;
  void fill(int64_t count, std::mt19937_64& rng, std::vector<int32_t>& out) const;

  const Tokenizer& tokenizer_;
  SyntheticOptions options_;
  std::vector<int32_t> filler_;  // one round of the filler sentences
};

// Where batches come from: packed windows of the corpus, each replaced by a
// synthetic sample with probability `synthetic_fraction`.
class BatchSource {
 public:
  // corpus may be null when synthetic_fraction is 1; tasks may be null when it is 0.
  // Throws Error (naming --data / --seq-len) when the training stream is shorter than one sequence.
  BatchSource(const Corpus* corpus, const SyntheticTasks* tasks, double synthetic_fraction, uint64_t seed);

  // The micro-batch `micro` of optimiser step `step`.
  Batch train_batch(int64_t step, int micro, int64_t batch, int64_t seq) const;
  // Validation batch `index`: held-out text windows in order (wrapping), or,
  // without text, synthetic samples from a fixed seed.
  Batch validation_batch(int64_t index, int64_t batch, int64_t seq) const;
  // Synthetic samples of one task from a seed of their own (for accuracy), of the lengths
  // set_synthetic_min_len gives training samples; the held-out text after a shorter sample
  // has no targets (-1), so that accuracy counts the answer alone.
  Batch task_batch(Task task, int64_t index, int64_t batch, int64_t seq) const;
  bool has_validation_text() const;
  // Synthetic training samples of every length from n tokens (at least the task's minimum) to the
  // whole sequence, uniformly; the rest of the sequence is a window of the training text, its
  // loss counted. 0 (the default): every sample fills its sequence. Needs tasks and training text
  // (throws Error naming --synthetic-min-len). Accuracy samples (task_batch) take the same
  // lengths; validation samples stay whole.
  void set_synthetic_min_len(int64_t n);

 private:
  // tokens[0..seq) = stream[start..start + seq), targets the same shifted by one.
  void text_span(const std::vector<int32_t>& stream, int64_t start, int64_t seq, int32_t* tokens,
                 int32_t* targets) const;
  const std::vector<int32_t>* haystack(bool evaluation) const;
  // One synthetic row of `task` (tokens[0..seq), targets[0..seq)): a sample of the length
  // set_synthetic_min_len allows, then a window of the text (held-out text when `evaluation`,
  // its targets -1; else training text, its loss counted).
  void synthetic_row(Task task, int64_t seq, std::mt19937_64& rng, int32_t* tokens, int32_t* targets,
                     bool evaluation) const;

  const Corpus* corpus_;
  const SyntheticTasks* tasks_;
  double synthetic_fraction_;
  uint64_t seed_;
  int64_t synthetic_min_len_ = 0;
};

}  // namespace podkv::train
