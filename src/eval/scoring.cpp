#include "eval/scoring.h"

#include <cctype>
#include <cmath>

namespace podkv::eval {

bool exact_match(const std::string& generated, const std::string& answer) {
  if (answer.empty()) return false;
  size_t i = 0;
  while (i < generated.size() && (std::isspace(static_cast<unsigned char>(generated[i])) || generated[i] == '"' ||
                                  generated[i] == '\'' || generated[i] == ':'))
    ++i;
  if (generated.compare(i, answer.size(), answer) != 0) return false;
  const size_t end = i + answer.size();
  return end == generated.size() || !std::isalnum(static_cast<unsigned char>(generated[end]));
}

void log_softmax(const float* logits, int64_t vocab, std::vector<double>& out) {
  out.resize(static_cast<size_t>(vocab));
  double max = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) max = std::max(max, static_cast<double>(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(logits[i] - max);
  const double log_z = max + std::log(sum);
  for (int64_t i = 0; i < vocab; ++i) out[i] = logits[i] - log_z;
}

int64_t argmax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

double kl_divergence(const std::vector<double>& log_p, const std::vector<double>& log_q) {
  double kl = 0;
  for (size_t i = 0; i < log_p.size(); ++i) kl += std::exp(log_p[i]) * (log_p[i] - log_q[i]);
  return std::max(0.0, kl);  // rounding can give -1e-17 for equal rows
}

void score_rows(const float* logits, const float* reference, const int32_t* next_tokens, int64_t rows,
                int64_t vocab, WindowScore& score) {
  std::vector<double> log_q, log_p;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    log_softmax(row, vocab, log_q);
    score.nll_sum -= log_q[next_tokens[r]];
    if (reference != nullptr) {
      const float* ref = reference + r * vocab;
      if (argmax(row, vocab) == argmax(ref, vocab)) ++score.top1_agree;
      log_softmax(ref, vocab, log_p);
      score.kl_sum += kl_divergence(log_p, log_q);
    }
    ++score.scored;
  }
}

}  // namespace podkv::eval
