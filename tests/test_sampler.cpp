// Sampler tests. The statistical ones draw many samples with a fixed seed, so they are
// deterministic; tolerances are ~5 standard deviations so a change of seed would still pass.
#include "sampling/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "util/error.h"

namespace podkv {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<float> log_probs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(x > 0 ? static_cast<float>(std::log(x)) : kNegInf);
  return l;
}

// Empirical frequency of each token over `n` draws.
std::vector<double> frequencies(SamplingParams params, const std::vector<float>& logits, int n,
                                const std::vector<int32_t>& history = {}) {
  Sampler s(params);
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < n; ++i) {
    const int32_t t = s.sample(logits.data(), static_cast<int32_t>(logits.size()), history);
    EXPECT_GE(t, 0);
    EXPECT_LT(t, static_cast<int32_t>(logits.size()));
    f[t] += 1.0;
  }
  for (double& x : f) x /= n;
  return f;
}

void expect_freqs(const std::vector<double>& got, const std::vector<double>& want,
                  double tol = 0.02) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] == 0.0) {
      EXPECT_EQ(got[i], 0.0) << "token " << i << " must never be drawn";
    } else {
      EXPECT_NEAR(got[i], want[i], tol) << "token " << i;
    }
  }
}

SamplingParams sampling(float temperature = 1.0f, uint64_t seed = 1234) {
  SamplingParams p;
  p.temperature = temperature;
  p.seed = seed;
  return p;
}

std::vector<float> random_logits(int vocab, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<float> l(vocab);
  for (float& x : l) x = static_cast<float>(static_cast<double>(g() >> 11) * 0x1.0p-53 * 20.0 - 10.0);
  return l;
}

TEST(Sampler, GreedyIsArgmaxLowestIdOnTies) {
  Sampler s(SamplingParams{});
  std::vector<float> l = {1.0f, 3.0f, 3.0f, 2.0f};
  EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
  l = {kNegInf, kNegInf, -5.0f, -5.0f};
  EXPECT_EQ(s.sample(l.data(), 4, {}), 2);
  l = {7.0f};
  EXPECT_EQ(s.sample(l.data(), 1, {}), 0);
  const std::vector<float> big = random_logits(128256, 7);
  size_t best = 0;
  for (size_t i = 1; i < big.size(); ++i)
    if (big[i] > big[best]) best = i;
  EXPECT_EQ(s.sample(big.data(), static_cast<int32_t>(big.size()), {}), static_cast<int32_t>(best));
}

TEST(Sampler, GreedyIgnoresFilters) {
  SamplingParams p;
  p.top_k = 3;
  p.top_p = 0.1f;
  p.min_p = 0.5f;
  Sampler s(p);
  std::vector<float> l = {0.0f, 1.0f, 5.0f, 5.0f};
  EXPECT_EQ(s.sample(l.data(), 4, {}), 2);
}

TEST(Sampler, TopK1EqualsGreedyAtAnyTemperature) {
  for (float temp : {0.01f, 0.5f, 1.0f, 3.0f, 100.0f}) {
    for (uint64_t seed : {1u, 2u, 3u}) {
      SamplingParams p = sampling(temp, seed);
      p.top_k = 1;
      Sampler s(p);
      Sampler greedy(SamplingParams{});
      for (int step = 0; step < 20; ++step) {
        const std::vector<float> l = random_logits(1000, seed * 100 + step);
        EXPECT_EQ(s.sample(l.data(), 1000, {}), greedy.sample(l.data(), 1000, {}))
            << "temperature " << temp;
      }
    }
  }
}

TEST(Sampler, TopKKeepsTheKBestRenormalised) {
  // probs 0.1 0.4 0.2 0.3 -> top 2 = tokens 1, 3 with 4/7, 3/7.
  SamplingParams p = sampling();
  p.top_k = 2;
  expect_freqs(frequencies(p, log_probs({0.1, 0.4, 0.2, 0.3}), 20000), {0, 4.0 / 7, 0, 3.0 / 7});
  // top_k >= vocab is no filter.
  p.top_k = 10;
  expect_freqs(frequencies(p, log_probs({0.1, 0.4, 0.2, 0.3}), 20000), {0.1, 0.4, 0.2, 0.3});
}

TEST(Sampler, TopKKeepsTiesAtTheBoundaryLikeTransformers) {
  // The 2nd best logit is shared by tokens 1 and 2: transformers keeps both.
  SamplingParams p = sampling();
  p.top_k = 2;
  expect_freqs(frequencies(p, log_probs({0.4, 0.2, 0.2, 0.1, 0.1}), 20000),
               {0.5, 0.25, 0.25, 0, 0});
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  const std::vector<float> l = log_probs({0.15, 0.5, 0.1, 0.25});
  SamplingParams p = sampling();
  p.top_p = 0.7f;  // 0.5 < 0.7, 0.75 >= 0.7
  expect_freqs(frequencies(p, l, 20000), {0, 2.0 / 3, 0, 1.0 / 3});
  p.top_p = 0.8f;  // 0.75 < 0.8, 0.9 >= 0.8
  expect_freqs(frequencies(p, l, 20000), {0.15 / 0.9, 0.5 / 0.9, 0, 0.25 / 0.9});
  p.top_p = 0.3f;  // the best token alone already reaches p
  expect_freqs(frequencies(p, l, 2000), {0, 1, 0, 0});
  p.top_p = 1e-6f;  // always at least one token
  expect_freqs(frequencies(p, l, 2000), {0, 1, 0, 0});
  p.top_p = 1.0f;
  expect_freqs(frequencies(p, l, 20000), {0.15, 0.5, 0.1, 0.25});
}

TEST(Sampler, TopPOnLargeVocabGrowsThePrefix) {
  // Three big tokens (0.4, 0.3, 0.2) and 2997 tiny ones sharing 0.1. top_p 0.95 needs
  // 0.05 more, i.e. ~1499 tiny tokens: more than the first sorted prefix of 1024. The
  // tiny ones tie, so the lowest ids are kept: ids 0..1499 except 17.
  const int V = 3000;
  std::vector<double> prob(V, 0.1 / (V - 3));
  prob[2000] = 0.4;
  prob[17] = 0.3;
  prob[1500] = 0.2;
  const std::vector<float> l = log_probs(prob);
  SamplingParams p = sampling();
  p.top_p = 0.85f;
  std::vector<double> want(V, 0.0);
  want[2000] = 0.4 / 0.9;
  want[17] = 0.3 / 0.9;
  want[1500] = 0.2 / 0.9;
  expect_freqs(frequencies(p, l, 4000), want, 0.04);

  p.top_p = 0.95f;
  const std::vector<double> f = frequencies(p, l, 6000);
  EXPECT_NEAR(f[2000], 0.4 / 0.95, 0.035);
  EXPECT_NEAR(f[17], 0.3 / 0.95, 0.035);
  EXPECT_NEAR(f[1500], 0.2 / 0.95, 0.035);
  int max_tiny = -1;
  double tiny_mass = 0;
  for (int t = 0; t < V; ++t) {
    if (t == 2000 || t == 17 || t == 1500 || f[t] == 0) continue;
    max_tiny = std::max(max_tiny, t);
    tiny_mass += f[t];
  }
  EXPECT_NEAR(tiny_mass, 0.05 / 0.95, 0.015);
  EXPECT_LE(max_tiny, 1501);  // 1499 plus a token of float slack
  EXPECT_GE(max_tiny, 1300);  // ~300 tiny draws over 1499 ids reach near the top
}

TEST(Sampler, TopPWithoutTopKOnFlatLargeVocab) {
  // Uniform over 128K: top_p 0.5 keeps the lowest half of the ids (ties by id), which
  // needs the prefix to grow to the whole vocabulary.
  const int V = 128256;
  const std::vector<float> l(V, 0.0f);
  SamplingParams p = sampling();
  p.top_p = 0.5f;
  Sampler s(p);
  int max_id = 0;
  for (int i = 0; i < 20; ++i) max_id = std::max(max_id, s.sample(l.data(), V, {}));
  EXPECT_LE(max_id, V / 2 + 1);
  EXPECT_GE(max_id, V / 2 - 20000);
}

TEST(Sampler, TopPAppliesAfterTopKRenormalised) {
  // top_k=2 leaves 0.4, 0.3 -> renormalised 0.571, 0.429. top_p 0.55 then keeps only
  // the first; without renormalisation (0.4 < 0.55) it would keep both.
  SamplingParams p = sampling();
  p.top_k = 2;
  p.top_p = 0.55f;
  expect_freqs(frequencies(p, log_probs({0.4, 0.3, 0.2, 0.1}), 2000), {1, 0, 0, 0});
}

TEST(Sampler, MinP) {
  const std::vector<float> l = log_probs({0.06, 0.5, 0.3, 0.1, 0.04});
  SamplingParams p = sampling();
  p.min_p = 0.15f;  // keep p >= 0.075
  expect_freqs(frequencies(p, l, 20000), {0, 0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9, 0});
  p.min_p = 0.1f;  // keep p >= 0.05
  expect_freqs(frequencies(p, l, 20000), {0.06 / 0.96, 0.5 / 0.96, 0.3 / 0.96, 0.1 / 0.96, 0});
  p.min_p = 1.0f;  // only the best
  expect_freqs(frequencies(p, l, 2000), {0, 1, 0, 0, 0});
}

TEST(Sampler, Temperature) {
  // logits 0, ln 4 at T=2 -> weights 1, 2.
  SamplingParams p = sampling(2.0f);
  expect_freqs(frequencies(p, {0.0f, static_cast<float>(std::log(4.0))}, 20000), {1.0 / 3, 2.0 / 3});
  // T=0.5 -> weights 1, 16.
  p = sampling(0.5f);
  expect_freqs(frequencies(p, {0.0f, static_cast<float>(std::log(4.0))}, 20000), {1.0 / 17, 16.0 / 17});
}

TEST(Sampler, TinyTemperatureDoesNotOverflow) {
  // 100 / 1e-37 overflows float; the sampler must still pick the best token.
  SamplingParams p = sampling(1e-37f);
  expect_freqs(frequencies(p, {100.0f, 99.0f, -50.0f}, 200), {1, 0, 0});
}

TEST(Sampler, MaskedTokensAreNeverDrawn) {
  SamplingParams p = sampling(1.5f);
  expect_freqs(frequencies(p, {kNegInf, 0.0f, kNegInf, 0.0f}, 4000), {0, 0.5, 0, 0.5});
}

TEST(Sampler, RepetitionPenaltyValues) {
  SamplingParams p = sampling();
  p.repetition_penalty = 2.0f;
  // Positive logit divided: ln 4 -> ln 2, so weights 2 : 1.
  const std::vector<float> pos = {static_cast<float>(std::log(4.0)), 0.0f};
  expect_freqs(frequencies(p, pos, 20000, {0}), {2.0 / 3, 1.0 / 3});
  // Each distinct token once, however often it appears.
  expect_freqs(frequencies(p, pos, 20000, {0, 0, 0, 0}), {2.0 / 3, 1.0 / 3});
  // Negative logit multiplied: -ln 2 -> -2 ln 2, so weights 1/4 : 1.
  const std::vector<float> neg = {static_cast<float>(-std::log(2.0)), 0.0f};
  expect_freqs(frequencies(p, neg, 20000, {0, 0}), {0.2, 0.8});
  // Zero logit and unseen tokens unchanged.
  expect_freqs(frequencies(p, {0.0f, 0.0f}, 20000, {0}), {0.5, 0.5});

  // Greedy sees the penalised logits too.
  SamplingParams g;
  g.repetition_penalty = 1.2f;
  Sampler s(g);
  std::vector<float> l = {2.0f, 1.9f};  // 2 / 1.2 = 1.67 < 1.9
  EXPECT_EQ(s.sample(l.data(), 2, {0}), 1);
  EXPECT_EQ(s.sample(l.data(), 2, {}), 0);
  l = {-1.0f, -1.1f};  // -1.2 < -1.1
  EXPECT_EQ(s.sample(l.data(), 2, {0}), 1);
}

TEST(Sampler, RepetitionWindow) {
  SamplingParams g;
  g.repetition_penalty = 1.2f;
  g.repetition_window = 2;
  std::vector<float> l = {2.0f, 1.9f, 0.0f};  // token 2 is a neutral filler (logit 0)
  // Token 0 is older than the last 2 tokens: not penalised.
  EXPECT_EQ(Sampler(g).sample(l.data(), 3, {0, 2, 2}), 0);
  EXPECT_EQ(Sampler(g).sample(l.data(), 3, {2, 0, 2}), 1);
  g.repetition_window = 0;  // whole history
  EXPECT_EQ(Sampler(g).sample(l.data(), 3, {0, 2, 2, 2, 2}), 1);
}

// OpenAI's semantics: logit[t] -= presence * (count[t] > 0) + frequency * count[t],
// counting only the generated tokens (history from generated_from on).
TEST(Sampler, PresenceAndFrequencyPenalties) {
  SamplingParams p = sampling();
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  // Token 0 generated twice: 0 - 0.5 - 2 * 0.25 = -1, so weights e^-1 : 1 : 1.
  const double w = std::exp(-1.0);
  expect_freqs(frequencies(p, {0.0f, 0.0f, 0.0f}, 30000, {0, 0}), {w / (w + 2), 1 / (w + 2), 1 / (w + 2)});
  // Prompt tokens (before generated_from) are not counted.
  {
    SamplingParams g;
    g.frequency_penalty = 1.0f;
    Sampler s(g);
    const std::vector<float> l = {2.0f, 1.5f};
    EXPECT_EQ(s.sample(l.data(), 2, {0, 0, 0}, 3), 0);  // all prompt
    EXPECT_EQ(s.sample(l.data(), 2, {0, 0, 0}, 2), 1);  // one generated 0: 2 - 1 < 1.5
    g.frequency_penalty = 0.2f;  // linear in the count: 2 - 0.2 * 2 = 1.6 > 1.5, 2 - 0.2 * 3 < 1.5
    EXPECT_EQ(Sampler(g).sample(l.data(), 2, {0, 0}, 0), 0);
    EXPECT_EQ(Sampler(g).sample(l.data(), 2, {0, 0, 0}, 0), 1);
  }
  {
    SamplingParams g;
    g.presence_penalty = 0.2f;  // once per distinct token, however often it appears: 1.8 > 1.7
    const std::vector<float> l = {2.0f, 1.7f};
    EXPECT_EQ(Sampler(g).sample(l.data(), 2, {0, 0, 0, 0}, 0), 0);
    g.presence_penalty = 0.5f;
    EXPECT_EQ(Sampler(g).sample(l.data(), 2, {0}, 0), 1);
    g.presence_penalty = -1.0f;  // negative: encourages repeats
    EXPECT_EQ(Sampler(g).sample(std::vector<float>{1.0f, 1.5f}.data(), 2, {0}, 0), 0);
  }
  {
    SamplingParams g;  // the sampler keeps no count between calls
    g.presence_penalty = 1.0f;
    Sampler s(g);
    const std::vector<float> l = {2.0f, 1.5f};
    EXPECT_EQ(s.sample(l.data(), 2, {0}, 0), 1);
    EXPECT_EQ(s.sample(l.data(), 2, {1}, 0), 0);
    EXPECT_THROW(s.sample(l.data(), 2, {7}, 0), Error);
  }
  SamplingParams bad;
  bad.frequency_penalty = std::nanf("");
  EXPECT_THROW(Sampler{bad}, Error);
}

TEST(Sampler, HistoryOutsideVocabThrows) {
  SamplingParams g;
  g.repetition_penalty = 1.1f;
  Sampler s(g);
  std::vector<float> l = {1.0f, 2.0f};
  EXPECT_THROW(s.sample(l.data(), 2, {5}), Error);
  EXPECT_THROW(s.sample(l.data(), 2, {-1}), Error);
}

TEST(Sampler, BadLogitsThrow) {
  Sampler s(sampling());
  std::vector<float> l = {1.0f, std::nanf("")};
  EXPECT_THROW(s.sample(l.data(), 2, {}), Error);
  l = {1.0f, std::numeric_limits<float>::infinity()};
  EXPECT_THROW(s.sample(l.data(), 2, {}), Error);
  l = {kNegInf, kNegInf};
  EXPECT_THROW(s.sample(l.data(), 2, {}), Error);
  EXPECT_THROW(s.sample(l.data(), 0, {}), Error);
  EXPECT_THROW(s.sample(nullptr, 2, {}), Error);
}

TEST(Sampler, SameSeedSameSequence) {
  SamplingParams p = sampling(0.9f, 42);
  p.top_k = 50;
  p.top_p = 0.9f;
  p.min_p = 0.01f;
  p.repetition_penalty = 1.1f;
  auto run = [&](uint64_t seed) {
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> hist = {1};
    for (int i = 0; i < 200; ++i) {
      const std::vector<float> l = random_logits(3000, 1000 + i);
      std::vector<float> flat(l.size());
      for (size_t j = 0; j < l.size(); ++j) flat[j] = l[j] * 0.3f;  // spread the mass
      hist.push_back(s.sample(flat.data(), 3000, hist));
    }
    return hist;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, DrawIsPinnedToMt19937_64Top53Bits) {
  // Two equal tokens: the draw picks 0 iff u < 0.5, with u = (rng() >> 11) * 2^-53.
  // This pins the sequence independently of the standard library.
  SamplingParams p = sampling(1.0f, 2024);
  Sampler s(p);
  std::mt19937_64 ref(2024);
  const std::vector<float> l = {0.5f, 0.5f};
  for (int i = 0; i < 200; ++i) {
    const double u = static_cast<double>(ref() >> 11) * 0x1.0p-53;
    EXPECT_EQ(s.sample(l.data(), 2, {}), u < 0.5 ? 0 : 1);
  }
}

TEST(Sampler, LargeVocabWithTopK) {
  // 128K vocab: top_k must not sort the whole vocabulary, and the result is in the top k.
  SamplingParams p = sampling(1.0f, 5);
  p.top_k = 40;
  Sampler s(p);
  const std::vector<float> l = random_logits(128256, 99);
  std::vector<float> sorted = l;
  std::nth_element(sorted.begin(), sorted.begin() + 39, sorted.end(), std::greater<float>());
  const float kth = sorted[39];
  for (int i = 0; i < 300; ++i) {
    const int32_t t = s.sample(l.data(), static_cast<int32_t>(l.size()), {});
    EXPECT_GE(l[t], kth);
  }
}

TEST(Sampler, ValidatesParams) {
  auto message = [](SamplingParams p) -> std::string {
    try {
      Sampler s(p);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  SamplingParams p;
  p.top_p = 1.5f;
  EXPECT_EQ(message(p), "top_p must be in (0, 1], got 1.5");
  p = {};
  p.top_p = 0.0f;
  EXPECT_NE(message(p).find("top_p"), std::string::npos);
  p = {};
  p.top_p = std::nanf("");
  EXPECT_NE(message(p).find("top_p"), std::string::npos);
  p = {};
  p.temperature = -0.1f;
  EXPECT_NE(message(p).find("temperature"), std::string::npos);
  p = {};
  p.temperature = std::numeric_limits<float>::infinity();
  EXPECT_NE(message(p).find("temperature"), std::string::npos);
  p = {};
  p.top_k = -1;
  EXPECT_NE(message(p).find("top_k"), std::string::npos);
  p = {};
  p.min_p = 1.5f;
  EXPECT_NE(message(p).find("min_p"), std::string::npos);
  p = {};
  p.repetition_penalty = 0.0f;
  EXPECT_NE(message(p).find("repetition_penalty"), std::string::npos);
  p = {};
  p.repetition_window = -3;
  EXPECT_NE(message(p).find("repetition_window"), std::string::npos);
  EXPECT_EQ(message(SamplingParams{}), "");
}

TEST(FindStopString, EarliestOccurrence) {
  const std::string text = "Hello world.\nUser: hi\n\nAssistant:";
  EXPECT_EQ(find_stop_string(text, {"User:", "\n\n"}), 13u);
  EXPECT_EQ(find_stop_string(text, {"\n\n", "User:"}), 13u);
  EXPECT_EQ(find_stop_string(text, {"\n\n"}), 21u);
  EXPECT_EQ(find_stop_string(text, {"nope"}), std::string::npos);
  EXPECT_EQ(find_stop_string(text, {}), std::string::npos);
  // Only matches starting at or after `from`.
  EXPECT_EQ(find_stop_string(text, {"User:"}, 13), 13u);
  EXPECT_EQ(find_stop_string(text, {"User:"}, 14), std::string::npos);
  EXPECT_EQ(find_stop_string(text, {"o"}, 5), 7u);
  EXPECT_EQ(find_stop_string(text, {"o"}, text.size()), std::string::npos);
  EXPECT_EQ(find_stop_string(text, {"o"}, text.size() + 10), std::string::npos);
  // Empty stop strings are ignored rather than matching everywhere.
  EXPECT_EQ(find_stop_string(text, {"", "world"}), 6u);
  // Overlapping stops: the earliest start wins.
  EXPECT_EQ(find_stop_string("abcabc", {"bca", "abc"}, 1), 1u);
  EXPECT_EQ(find_stop_string("", {"x"}), std::string::npos);
}

}  // namespace
}  // namespace podkv
