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

// Order of operations (as transformers applies its logits processors, and vLLM
// its penalties): repetition penalty, presence and frequency penalties,
// temperature, top-k, top-p, min-p, then a draw from the softmax.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // `logits` has vocab entries; `history` is every token so far (prompt +
  // generated), the generated ones from index `generated_from` on.
  int32_t sample(const float* logits, int32_t vocab, const std::vector<int32_t>& history, size_t generated_from = 0);
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> scratch_;   // penalised, temperature-scaled logits
  std::vector<int32_t> order_;   // candidate token ids
  std::vector<float> values_;    // copy of scratch_ for nth_element
  std::vector<double> weights_;  // unnormalised probabilities of the candidates
  std::vector<uint8_t> seen_;    // [vocab] presence marks, cleared after each use
};

// Finds the earliest occurrence of any stop string in `text` that starts at or
// after `from`; returns its position or std::string::npos. Used to stop
// generation and cut the text there.
size_t find_stop_string(const std::string& text, const std::vector<std::string>& stops,
                        size_t from = 0);

}  // namespace podkv
