// The paged KV cache: reservation all-or-nothing, window pages given back,
// a view builder keeping its page tables while they do not change,
// accounting equal to the analytic formula, isolation between sequences.
#include <gtest/gtest.h>

#include <random>

#include "kv/kv_cache.h"
#include "kv/kv_view_builder.h"
#include "kv_test_util.h"

namespace podkv {
namespace {

KvLayout window_layout(int layers, int heads, int dim, int sink, int recent) {
  KvLayout l = KvLayout::dense(layers, heads, dim);
  l.sink_tokens = sink;
  l.recent_tokens = recent;
  // Layer 1's keys keep only the window and read distant keys from layer 0.
  for (int h = 0; h < heads; ++h) l.keys[1 * heads + h] = StreamRule{Retention::Window, 0, -1};
  return l;
}

TEST(KvCache, DenseAccountingMatchesFormulaAndPages) {
  KvCache cache(KvLayout::dense(2, 2, 8), 1 << 20, 4);
  const int seq = cache.add_sequence();
  for (int64_t n = 1; n <= 37; ++n) {
    cache.reserve(seq, n);
    cache.commit(seq, n);
    EXPECT_EQ(cache.bytes_in_use(seq), static_cast<size_t>(n) * 2 * 2 * 2 * 8 * 4);
    EXPECT_EQ(cache.bytes_reserved(seq), static_cast<size_t>((n + 3) / 4) * 4 * 2 * 2 * 2 * 8 * 4);
  }
}

TEST(KvCache, WindowStreamsGiveBackPagesEveryStep) {
  const int sink = 3, recent = 5;
  KvLayout layout = window_layout(3, 2, 4, sink, recent);
  KvCache cache(layout, 1 << 20, 1);  // one token per page: reserved == in use
  const int seq = cache.add_sequence();
  for (int64_t n = 1; n <= 60; ++n) {
    cache.reserve(seq, n);
    cache.commit(seq, n);
    // Analytic: 5 full streams per head (k0, k2, v0, v1, v2) + 1 window stream per head.
    const int64_t window = std::min<int64_t>(n, sink) + (n - std::max<int64_t>(std::min<int64_t>(n, sink), n - recent));
    const int64_t vectors = 2 * (5 * n + window);
    EXPECT_EQ(cache.bytes_in_use(seq), static_cast<size_t>(vectors) * 4 * 4) << n;
    EXPECT_EQ(cache.bytes_reserved(seq), cache.bytes_in_use(seq)) << n;
    // The window stream still holds exactly the sink and the recent tokens.
    const std::vector<int32_t>& k1 = cache.page_table(seq, kKeys, 1, 0);
    for (int64_t j = 0; j < n; ++j) {
      const bool proximal = j < sink || j > n - 1 - recent;
      const bool held = j < static_cast<int64_t>(k1.size()) && k1[j] >= 0;  // one token per page
      EXPECT_EQ(held, proximal) << "n=" << n << " j=" << j;
    }
  }
}

TEST(KvCache, RefusalChangesNothingAndOtherSequencesSurvive) {
  KvCache cache(KvLayout::dense(1, 1, 4), 4 * 4 * 10, 1);  // 10 pages of one vector each
  const int a = cache.add_sequence();
  cache.reserve(a, 3);
  for (int j = 0; j < 3; ++j) {
    float key[4];
    for (int x = 0; x < 4; ++x) key[x] = static_cast<float>(j * 10 + x);
    testing::write_key(cache, a, 0, 0, j, key);
  }
  cache.commit(a, 3);
  const int b = cache.add_sequence();
  const size_t free_before = cache.free_pages();
  EXPECT_THROW(cache.reserve(b, 3), KvCacheFull);  // needs 6 pages, 4 free
  EXPECT_EQ(cache.free_pages(), free_before);
  EXPECT_EQ(cache.bytes_reserved(b), 0u);
  EXPECT_EQ(cache.tokens_that_fit(b), 2);
  cache.reserve(b, 2);
  cache.commit(b, 2);
  for (int j = 0; j < 3; ++j) EXPECT_EQ(testing::read_key(cache, a, 0, 0, j)[1], static_cast<float>(j * 10 + 1));
  cache.remove_sequence(a);
  EXPECT_EQ(cache.free_pages(), 10u - 4u);
  EXPECT_THROW(cache.entry_location(b, kKeys, 0, 0, 5), Error);
}

TEST(KvLayout, RejectsSourcesThatDoNotKeepTokens) {
  KvLayout l = KvLayout::dense(2, 1, 4);
  l.recent_tokens = 2;
  l.keys[0] = StreamRule{Retention::Window, -1, -1};
  l.keys[1] = StreamRule{Retention::Window, 0, -1};  // layer 0 does not keep distant keys
  EXPECT_THROW(l.validate(), Error);
}

}  // namespace
}  // namespace podkv

namespace podkv {
namespace {

TEST(KvCache, PeakPagesPredictsChunkedGrowth) {
  for (int page : {1, 4, 16}) {
    for (int64_t chunk : {1, 5, 16, 37, 200}) {
      KvCache cache(window_layout(3, 2, 4, 5, 11), 1 << 22, page);
      const int seq = cache.add_sequence();
      const int64_t target = 150;
      int64_t max_pages = 0;
      for (int64_t n = 0; n < target;) {
        const int64_t end = std::min(target, n + chunk);
        cache.reserve(seq, end);
        max_pages = std::max<int64_t>(max_pages, cache.bytes_reserved(seq) / cache.page_bytes());
        cache.commit(seq, end);
        EXPECT_EQ(cache.held_pages(end), static_cast<int64_t>(cache.bytes_reserved(seq) / cache.page_bytes()));
        n = end;
      }
      EXPECT_EQ(cache.peak_pages(0, target, chunk), max_pages) << "page " << page << " chunk " << chunk;
    }
  }
}

// A view builder kept across steps reuses the page tables it copied while the sequences' tables
// are unchanged (tables_version): every step's view equals a fresh builder's, for every policy,
// through page boundaries, windows giving pages back, selection (SnapKV's end of prefill, H2O's
// drops through scores), and sequences leaving and joining. Its tables_generation names the tables:
// a step that keeps the previous generation has the previous step's tables (the CUDA backend then
// does not send them again), a step that names it as its base has its first tables_same_streams
// streams (the CUDA backend sends the rest), and no two builders share one.
TEST(KvViewBuilder, AViewKeptAcrossStepsEqualsAFreshOne) {
  ModelConfig c;
  c.num_layers = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.num_heads = 4;
  for (const char* policy : {"dense", "pod", "streaming", "h2o", "snapkv", "cla", "pod+snapkv"}) {
    SCOPED_TRACE(policy);
    const KvLayout layout = testing::small_policy_layout(c, policy, 2, 8, 5, 4, 2);
    KvCache cache(layout, 1 << 22, 4);
    testing::host_pool(cache);
    KvViewBuilder kept;
    std::mt19937 rng(3);
    std::vector<int> seqs = {cache.add_sequence(), cache.add_sequence(), cache.add_sequence()};
    std::vector<int64_t> prompt = {9, 14, 5};
    int rebuilt = 0, reused = 0, same_generation = 0, partial = 0;
    uint64_t last_generation = 0;
    std::vector<int64_t> last_indptr;
    std::vector<int32_t> last_indices;
    for (int step = 0; step < 60; ++step) {
      if (step == 30) {  // one leaves, another joins
        cache.remove_sequence(seqs[1]);
        seqs[1] = cache.add_sequence();
        prompt[1] = cache.length(seqs[1]) + 6;
      }
      std::vector<int64_t> lengths;
      bool changed = false;
      for (size_t b = 0; b < seqs.size(); ++b) {
        const uint64_t version = cache.tables_version(seqs[b]);
        const int64_t n = cache.length(seqs[b]);
        lengths.push_back(n < prompt[b] ? prompt[b] : n + 1);
        cache.reserve(seqs[b], lengths.back());
        changed |= cache.tables_version(seqs[b]) != version;
      }
      (changed ? rebuilt : reused) += 1;
      const KvView& a = kept.build(cache, nullptr, seqs, lengths);
      KvViewBuilder fresh;
      const KvView& f = fresh.build(cache, nullptr, seqs, lengths);
      const int64_t streams = static_cast<int64_t>(seqs.size()) * 4 * c.num_layers * c.num_kv_heads;
      ASSERT_EQ(std::vector<int64_t>(a.page_indptr, a.page_indptr + streams + 1),
                std::vector<int64_t>(f.page_indptr, f.page_indptr + streams + 1)) << "step " << step;
      ASSERT_EQ(std::vector<int32_t>(a.page_indices, a.page_indices + a.page_indptr[streams]),
                std::vector<int32_t>(f.page_indices, f.page_indices + f.page_indptr[streams])) << "step " << step;
      ASSERT_EQ(std::vector<int64_t>(a.window_base, a.window_base + seqs.size()),
                std::vector<int64_t>(f.window_base, f.window_base + seqs.size()));
      std::vector<int64_t> indptr(a.page_indptr, a.page_indptr + streams + 1);
      std::vector<int32_t> indices(a.page_indices, a.page_indices + a.page_indptr[streams]);
      ASSERT_NE(a.tables_generation, 0u);
      ASSERT_NE(a.tables_generation, f.tables_generation);
      if (a.tables_generation == last_generation) {
        ++same_generation;
        ASSERT_EQ(indptr, last_indptr) << "step " << step;
        ASSERT_EQ(indices, last_indices) << "step " << step;
      } else if (a.tables_base_generation != 0) {  // the first tables_same_streams are as before
        ASSERT_EQ(a.tables_base_generation, last_generation) << "step " << step;
        const int64_t same = a.tables_same_streams;
        ASSERT_GT(same, 0);
        ASSERT_LE(same, std::min<int64_t>(streams, static_cast<int64_t>(last_indptr.size()) - 1));
        ASSERT_EQ(std::vector<int64_t>(indptr.begin(), indptr.begin() + same + 1),
                  std::vector<int64_t>(last_indptr.begin(), last_indptr.begin() + same + 1)) << "step " << step;
        ASSERT_EQ(std::vector<int32_t>(indices.begin(), indices.begin() + indptr[same]),
                  std::vector<int32_t>(last_indices.begin(), last_indices.begin() + indptr[same])) << "step " << step;
        ++partial;
      }
      last_generation = a.tables_generation, last_indptr = indptr, last_indices = indices;
      if (kept.score_count() > 0) {  // attention's scores: random, so H2O drops differ step by step
        std::vector<float> scores(static_cast<size_t>(kept.score_count()));
        for (float& x : scores) x = static_cast<float>(rng() % 100);
        kept.apply_scores(cache, seqs, scores.data());
      }
      for (size_t b = 0; b < seqs.size(); ++b) {
        cache.commit(seqs[b], lengths[b]);
        if (lengths[b] == prompt[b] && !cache.prefill_done(seqs[b])) cache.end_prefill(seqs[b]);
      }
    }
    // Steps within a page leave the tables as they were (with SnapKV's stores, which grow as tokens
    // leave the window, and 3 sequences in different phases, nearly every step changes one)...
    if (layout.selection != Selection::SnapKV) {
      EXPECT_GT(reused, 10);
      EXPECT_GT(same_generation, 10);
    }
    EXPECT_GT(rebuilt, 10);  // ... and page boundaries change them
    EXPECT_GT(partial, 5);   // the first sequences' tables kept where a later one changed
  }
}

}  // namespace
}  // namespace podkv
