#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <sstream>

#include "util/error.h"

namespace podkv {
namespace {

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// u in [0, 1) from the top 53 bits of one 64-bit draw. std::uniform_real_distribution
// is not specified bit for bit, so it gives other sequences on other standard
// libraries; this does not (mt19937_64 itself is fully specified).
double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

// How many of the best tokens the top-p search sorts first; grown when they do not
// hold enough mass. Real distributions put top_p of their mass in far fewer tokens,
// so the whole vocabulary is rarely sorted.
constexpr size_t kTopPFirstPrefix = 1024;

}  // namespace

Sampler::Sampler(const SamplingParams& p) : params_(p), rng_(p.seed) {
  check(std::isfinite(p.temperature) && p.temperature >= 0.0f,
        "temperature must be >= 0, got " + num(p.temperature));
  check(p.top_k >= 0, "top_k must be >= 0, got " + num(p.top_k));
  // Written so that NaN fails too.
  check(p.top_p > 0.0f && p.top_p <= 1.0f, "top_p must be in (0, 1], got " + num(p.top_p));
  check(p.min_p >= 0.0f && p.min_p <= 1.0f, "min_p must be in [0, 1], got " + num(p.min_p));
  check(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f,
        "repetition_penalty must be > 0, got " + num(p.repetition_penalty));
  check(std::isfinite(p.presence_penalty), "presence_penalty must be finite, got " + num(p.presence_penalty));
  check(std::isfinite(p.frequency_penalty), "frequency_penalty must be finite, got " + num(p.frequency_penalty));
  check(p.repetition_window >= 0,
        "repetition_window must be >= 0, got " + num(p.repetition_window));
}

SampleRequest Sampler::request(const std::vector<int32_t>& history, size_t generated_from, int32_t vocab) {
  check(vocab > 0, "sample: vocab must be > 0, got " + num(vocab));
  SampleRequest r;
  r.params = params_;
  auto token = [&](size_t k) {
    const int32_t t = history[k];
    check(t >= 0 && t < vocab, [&] {
      return "sample: history token " + std::to_string(t) + " is outside the vocabulary of " + std::to_string(vocab);
    });
    return t;
  };
  // counts_[t] = 1 + the index of t's entry in r.penalties (0: none yet).
  counts_.resize(static_cast<size_t>(vocab), 0);
  auto entry = [&](int32_t t) -> SamplePenalty& {
    if (counts_[t] == 0) {
      r.penalties.push_back(SamplePenalty{t, 0, 0});
      counts_[t] = static_cast<int32_t>(r.penalties.size());
    }
    return r.penalties[counts_[t] - 1];
  };
  // Repetition penalty as transformers' RepetitionPenaltyLogitsProcessor: each token seen in
  // the window is penalised once, from its original logit.
  if (params_.repetition_penalty != 1.0f) {
    const size_t window = static_cast<size_t>(params_.repetition_window);
    const size_t start = (window > 0 && history.size() > window) ? history.size() - window : 0;
    for (size_t k = start; k < history.size(); ++k) entry(token(k)).repeated = 1;
  }
  // Presence and frequency penalties (OpenAI's, as vLLM applies them after the repetition
  // penalty) count the generated tokens only.
  if ((params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) && generated_from < history.size()) {
    for (size_t k = generated_from; k < history.size(); ++k) ++entry(token(k)).count;
  }
  for (const SamplePenalty& p : r.penalties) counts_[p.token] = 0;
  if (params_.temperature > 0.0f) r.u = uniform01(rng_);
  return r;
}

int32_t Sampler::sample(const float* logits, int32_t vocab, const std::vector<int32_t>& history,
                        size_t generated_from) {
  return draw_.sample(request(history, generated_from, vocab), logits, vocab);
}

int32_t LogitSampler::sample(const SampleRequest& request, const float* logits, int32_t vocab) {
  check(logits != nullptr, "sample: logits is null");
  check(vocab > 0, "sample: vocab must be > 0, got " + num(vocab));
  const SamplingParams& params = request.params;
  const size_t V = static_cast<size_t>(vocab);
  scratch_.assign(logits, logits + V);
  float* s = scratch_.data();

  // -inf is a legitimate mask (the token is impossible); NaN or +inf means the forward
  // pass went wrong, and sampling from it would hide that.
  for (size_t i = 0; i < V; ++i) {
    if (std::isnan(s[i]) || s[i] == std::numeric_limits<float>::infinity()) {
      throw Error("sample: logit of token " + std::to_string(i) + " is " + num(s[i]));
    }
  }

  // The repetition penalty divides a positive original logit (multiplies a negative one);
  // then every generated occurrence costs `frequency`, the first one also `presence`
  // (subtracted one at a time, in that order, as the occurrences come).
  const float rp = params.repetition_penalty;
  const float presence = params.presence_penalty, frequency = params.frequency_penalty;
  for (const SamplePenalty& p : request.penalties) {
    check(p.token >= 0 && p.token < vocab, [&] {
      return "sample: history token " + std::to_string(p.token) + " is outside the vocabulary of " +
             std::to_string(vocab);
    });
    float& v = s[p.token];
    if (p.repeated && rp != 1.0f) {
      const float l = logits[p.token];
      v = l < 0.0f ? l * rp : l / rp;
    }
    if (p.count > 0) {
      v -= frequency;
      v -= presence;
      for (int32_t c = 1; c < p.count; ++c) v -= frequency;
    }
  }

  // Greedy: the argmax survives every filter below, so top_k/top_p/min_p do not matter.
  // Lowest id on ties, like torch.argmax.
  size_t best = 0;
  for (size_t i = 1; i < V; ++i) {
    if (s[i] > s[best]) best = i;
  }
  check(s[best] != -std::numeric_limits<float>::infinity(), "sample: every logit is -inf");
  if (params.temperature == 0.0f) return static_cast<int32_t>(best);

  // Shift so the best logit is 0 before dividing: softmax and every filter below are
  // shift-invariant, and a tiny temperature then cannot overflow to +inf (only to -inf,
  // a zero weight).
  const float temp = params.temperature;
  const float top = s[best];
  for (size_t i = 0; i < V; ++i) s[i] = (s[i] - top) / temp;
  const float lmax = 0.0f;  // s[best]; dividing by a positive keeps the order

  // Best first; equal logits by lowest id, so the kept set never depends on the sort.
  auto before = [s](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); };

  // The k-th largest scaled logit (1-based k <= V), found on a contiguous copy, which is
  // much faster than nth_element through an index array.
  auto kth_largest = [&](size_t kk) {
    values_.assign(s, s + V);
    std::nth_element(values_.begin(), values_.begin() + (kk - 1), values_.end(),
                     std::greater<float>());
    return values_[kk - 1];
  };
  // order_ = every token with logit >= thr, best first: a prefix of the fully sorted
  // vocabulary, since everything below thr sorts after it.
  auto gather_sorted = [&](float thr) {
    order_.clear();
    for (size_t i = 0; i < V; ++i) {
      if (s[i] >= thr) order_.push_back(static_cast<int32_t>(i));
    }
    std::sort(order_.begin(), order_.end(), before);
  };

  bool sorted = false;  // order_ holds every candidate, best first
  const int k = params.top_k;
  if (k > 0 && static_cast<size_t>(k) < V) {
    // transformers keeps every token whose logit is >= the k-th largest, so tokens tied
    // with the k-th one all stay (the set can exceed k). Only these are sorted, never
    // the whole vocabulary.
    gather_sorted(kth_largest(static_cast<size_t>(k)));
    sorted = true;
  } else {
    order_.resize(V);
    std::iota(order_.begin(), order_.end(), 0);
  }
  size_t n = order_.size();  // candidates are order_[0, n)

  if (params.top_p < 1.0f) {
    // Keep the smallest best-first prefix whose probability (renormalised over the
    // current candidates, as transformers applies top-p after top-k) reaches top_p.
    double z = 0.0;
    for (size_t i = 0; i < n; ++i) z += std::exp(s[order_[i]] - lmax);
    const double target = static_cast<double>(params.top_p) * z;
    // Without top-k the candidates are the whole vocabulary: sort only the best m
    // tokens, and more only if they do not hold top_p of the mass.
    size_t m = kTopPFirstPrefix;
    for (;;) {
      if (!sorted) {
        if (m < V) {
          gather_sorted(kth_largest(m));
        } else {
          order_.resize(V);
          std::iota(order_.begin(), order_.end(), 0);
          std::sort(order_.begin(), order_.end(), before);
          sorted = true;
        }
      }
      size_t cut = 0;
      double cum = 0.0;
      for (size_t i = 0; i < order_.size(); ++i) {
        cum += std::exp(s[order_[i]] - lmax);
        if (cum >= target) {
          cut = i + 1;
          break;
        }
      }
      if (cut > 0) {
        n = cut;
        break;
      }
      if (sorted) {  // all candidates seen; rounding kept cum just under target: keep all
        n = order_.size();
        break;
      }
      m *= 8;
    }
    sorted = true;
  }

  if (params.min_p > 0.0f) {
    // p_i >= min_p * p_max  <=>  exp(l_i - l_max) >= min_p: the normaliser cancels. The
    // argmax always passes, so at least one token stays. Order is preserved.
    const double mp = params.min_p;
    size_t w = 0;
    for (size_t i = 0; i < n; ++i) {
      const int32_t t = order_[i];
      if (std::exp(s[t] - lmax) >= mp) order_[w++] = t;
    }
    n = w;
  }

  // One draw from the softmax over the candidates.
  weights_.resize(n);
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    weights_[i] = std::exp(s[order_[i]] - lmax);
    total += weights_[i];
  }
  const double u = request.u * total;
  double cum = 0.0;
  size_t last_positive = 0;
  for (size_t i = 0; i < n; ++i) {
    if (weights_[i] <= 0.0) continue;
    cum += weights_[i];
    last_positive = i;
    if (u < cum) return order_[i];
  }
  return order_[last_positive];  // u landed past the rounded sum
}

size_t find_stop_string(const std::string& text, const std::vector<std::string>& stops,
                        size_t from) {
  size_t found = std::string::npos;
  if (from > text.size()) return found;
  for (const std::string& stop : stops) {
    if (stop.empty()) continue;  // an empty stop would match everywhere; treat it as unset
    const size_t pos = text.find(stop, from);
    if (pos < found) found = pos;
  }
  return found;
}

}  // namespace podkv
