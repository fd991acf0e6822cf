// Next-token sampling from logits: greedy, temperature, top-k, top-p, min-p, a
// repetition penalty and OpenAI's presence and frequency penalties,
// deterministic given the seed.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace podkv {

struct SamplingParams {
  float temperature = 0.0f;        // 0 = greedy (argmax, lowest id on ties)
  int top_k = 0;                   // 0 = off
  float top_p = 1.0f;              // 1 = off
  float min_p = 0.0f;              // 0 = off; keep tokens with p >= min_p * p_max
  float repetition_penalty = 1.0f; // 1 = off; as in transformers (divide positive logits, multiply negative)
  int repetition_window = 64;      // how many recent tokens the penalty looks at (0 = all)
  // OpenAI's: logit[t] -= presence * (count[t] > 0) + frequency * count[t],
  // count over the generated tokens only. 0 = off.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;
};

// One draw as data: the parameters, the tokens the penalties touch and the
// uniform number, so that the same request gives the same token wherever the
// logits are (LogitSampler on the CPU, a kernel on a GPU: cuda/kernels.h).
struct SamplePenalty {
  int32_t token = 0;
  int32_t repeated = 0;  // in the repetition window (repetition_penalty != 1)
  int32_t count = 0;     // occurrences among the generated tokens (presence/frequency penalties on)
};
struct SampleRequest {
  SamplingParams params;               // seed unused
  std::vector<SamplePenalty> penalties;  // one per distinct token, in first-occurrence order
  double u = 0.0;                      // uniform in [0, 1), drawn when temperature > 0
};

// The draw itself, stateless but for its scratch. Order of operations (as
// transformers applies its logits processors, and vLLM its penalties):
// repetition penalty, presence and frequency penalties, temperature, top-k,
// top-p, min-p, then a draw from the softmax.
class LogitSampler {
 public:
  // `logits` has vocab entries; throws Error for a NaN or +inf logit, or when every one is -inf.
  int32_t sample(const SampleRequest& request, const float* logits, int32_t vocab);

 private:
  std::vector<float> scratch_;   // penalised, temperature-scaled logits
  std::vector<int32_t> order_;   // candidate token ids
  std::vector<float> values_;    // copy of scratch_ for nth_element
  std::vector<double> weights_;  // unnormalised probabilities of the candidates
};

// The sampler of one sequence: its parameters and random generator.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // The request of the next draw: `history` is every token so far (prompt +
  // generated), the generated ones from index `generated_from` on. Draws from
  // the generator (once, when temperature > 0).
  SampleRequest request(const std::vector<int32_t>& history, size_t generated_from, int32_t vocab);
  // request() and LogitSampler::sample in one.
  int32_t sample(const float* logits, int32_t vocab, const std::vector<int32_t>& history, size_t generated_from = 0);
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  LogitSampler draw_;
  std::vector<int32_t> counts_;  // [vocab] per-token marks, cleared after each use
};

// Finds the earliest occurrence of any stop string in `text` that starts at or
// after `from`; returns its position or std::string::npos. Used to stop
// generation and cut the text there.
size_t find_stop_string(const std::string& text, const std::vector<std::string>& stops,
                        size_t from = 0);

}  // namespace podkv
