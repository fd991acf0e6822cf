// Scoring for podkv eval: exact match of a generated answer, and per-position
// quality of a policy's logits against the dense model's (negative
// log-likelihood of the next token, top-1 agreement, KL divergence).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace podkv::eval {

// True when `generated` answers with `answer`: after leading spaces, quotes,
// colons and newlines, the text starts with `answer` and the next character
// (if any) is not a letter or digit. So "68220." and " 68220 is the key"
// match 68220, "682201" and "6822" do not. An empty answer never matches.
bool exact_match(const std::string& generated, const std::string& answer);

// log-softmax of one row of logits [vocab], in double.
void log_softmax(const float* logits, int64_t vocab, std::vector<double>& out);

// Index of the largest logit (the lowest index on ties, as greedy sampling).
int64_t argmax(const float* logits, int64_t vocab);

// KL(p || q) = Σ p (log p - log q) from log-probabilities [vocab] (>= 0).
double kl_divergence(const std::vector<double>& log_p, const std::vector<double>& log_q);

// Sums over the scored positions of one window and one policy.
struct WindowScore {
  int64_t scored = 0;      // positions scored
  double nll_sum = 0;      // Σ -log q(next token)
  int64_t top1_agree = 0;  // positions where argmax q == argmax of the reference
  double kl_sum = 0;       // Σ KL(reference || q)
};

// Scores `rows` positions: logits [rows, vocab] of the policy, the reference's
// (dense) logits of the same positions or null, and the next tokens [rows].
void score_rows(const float* logits, const float* reference, const int32_t* next_tokens, int64_t rows,
                int64_t vocab, WindowScore& score);

}  // namespace podkv::eval
