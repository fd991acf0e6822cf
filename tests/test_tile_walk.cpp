// The prefill attention kernels' key-tile walk (src/cuda/tile_walk.h), on the host: TileWalk, the
// closed form the copying wgmma kernel's loops take their tiles from, against next_tile's cursor,
// which the other prefill kernels walk. A count too small drops keys, one too large leaves the
// computing warps waiting for stages that are never filled, a wrong place reads the wrong keys.
#include <gtest/gtest.h>

#include <random>
#include <utility>
#include <vector>

#include "cuda/tile_walk.h"

namespace podkv::cuda::prefill {
namespace {

struct StepBounds {  // what KeySpan reads of a DeviceStep
  int64_t sink_tokens = 0, recent_tokens = 0;
};

using Tiles = std::vector<std::pair<int, int32_t>>;  // (pass, k0)

Tiles cursor_tiles(const KeySpan& span, bool one_pass, int passes, int keys) {
  Tiles tiles;
  for (TileCursor c = next_tile(TileCursor{0, -keys}, span, one_pass, passes, keys); c.pass < passes;
       c = next_tile(c, span, one_pass, passes, keys))
    tiles.emplace_back(c.pass, c.k0);
  return tiles;
}

Tiles walk_tiles(const KeySpan& span, bool one_pass, int passes, int keys) {
  const TileWalk walk(span, one_pass, passes, keys);
  Tiles tiles;
  for (int j = 0; j < walk.count; ++j) tiles.emplace_back(walk.at(j).pass, walk.at(j).k0);
  return tiles;
}

// Rows at positions 1000..1031 with a sink of 16 and a window of 128, 64-key tiles: pass 0 (the own
// keys) reads the sink's tile and the window's (keys 873 to 1031), pass 1 (the anchor's) the
// distant tiles 0..14 (keys below 904, the last row's window start).
TEST(TileWalk, PodShapedRowsReadTheSinkTheWindowAndTheDistantRun) {
  const KeySpan span(StepBounds{16, 128}, 1000, 32);
  Tiles want = {{0, 0}, {0, 832}, {0, 896}, {0, 960}, {0, 1024}};
  for (int t = 0; t <= 14; ++t) want.emplace_back(1, 64 * t);
  EXPECT_EQ(walk_tiles(span, false, 2, 64), want);
  EXPECT_EQ(cursor_tiles(span, false, 2, 64), want);
  // One pass (a layer that is its own distant source) reads every tile up to the last row once.
  Tiles dense;
  for (int t = 0; t <= 16; ++t) dense.emplace_back(0, 64 * t);
  EXPECT_EQ(walk_tiles(span, true, 1, 64), dense);
  EXPECT_EQ(TileWalk(KeySpan(StepBounds{16, 128}, 0, 0), false, 2, 64).count, 0);  // no rows
}

// Spans from KeySpan's own constructor (PoD's shapes) and spans of arbitrary fields (unordered,
// negative), 64- and 16-key tiles, one or two passes.
TEST(TileWalk, MatchesTheCursorOnRandomSpans) {
  std::mt19937 rng(35);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int checked = 0;
  for (int trial = 0; trial < 200000; ++trial) {
    KeySpan span;
    if (trial % 2 == 0) {
      const StepBounds step{uniform(0, 80), uniform(0, 1) ? uniform(1, 400) : 0};
      span = KeySpan(step, uniform(0, 5000), uniform(0, 64));
    } else {
      span.last = uniform(-1, 3000), span.pos0 = uniform(0, 3000), span.split = uniform(0, 1) == 1;
      span.sink_min = uniform(-200, 3200), span.sink_max = uniform(-200, 3200);
      span.recent_min = uniform(-200, 3200), span.recent_max = uniform(-200, 3200);
    }
    const bool one_pass = uniform(0, 4) == 0;
    const int passes = one_pass ? 1 : uniform(1, 2), keys = uniform(0, 3) == 0 ? 16 : 64;
    const Tiles want = cursor_tiles(span, one_pass, passes, keys);
    ASSERT_EQ(walk_tiles(span, one_pass, passes, keys), want)
        << "span last " << span.last << " sink " << span.sink_min << ".." << span.sink_max << " recent "
        << span.recent_min << ".." << span.recent_max << " one_pass " << one_pass << " passes " << passes
        << " keys " << keys;
    checked += !want.empty();
  }
  EXPECT_GT(checked, 100000);  // most spans have tiles
}

}  // namespace
}  // namespace podkv::cuda::prefill
