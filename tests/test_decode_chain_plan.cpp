// The index arithmetic of the CUDA decode chain (src/cuda/decode_chain_plan.h),
// run here on the CPU as the kernel runs it: over every task, warp and lane of a
// stage's plan, each (row of W, 16-byte chunk) that feeds an output is summed
// exactly once, each output is written exactly once, the warps that share a unit
// are in one block with consecutive slices, and a slice keeps its lanes at least
// kChainGroup chunks long. Shapes: Llama-3-8B's four projections, small and odd
// ones (an odd row count, inputs shorter than a warp, a last slice cut short), the q | k | v
// projection with RoPE in its epilogue (a unit is one rotation pair: rows i and i + d / 2 of a
// head, or 2i and 2i + 1 interleaved),
// on grids of 1, 7, 132, 264 (the H200 default: 2 blocks of 8 warps per SM) and 396 blocks of 8
// and 24 warps, with the slices chosen and forced.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "cuda/decode_chain_plan.h"

namespace podkv::cuda {
namespace {

struct StageShape {
  int64_t out, in;
  ChainEpilogue epilogue;
  int64_t rope_half = 0;  // kRope
  bool rope_interleaved = false;
};

const StageShape kShapes[] = {
    {4096, 4096, ChainEpilogue::kResidual},   // Llama-3-8B: o
    {28672, 4096, ChainEpilogue::kSwiglu},    // gate | up
    {4096, 14336, ChainEpilogue::kResidual},  // down
    {6144, 4096, ChainEpilogue::kBias},       // q | k | v
    {101, 40, ChainEpilogue::kResidual},      // an odd row count, 5 chunks per row
    {88, 64, ChainEpilogue::kSwiglu},
    {7, 8, ChainEpilogue::kBias},
    {33, 8264, ChainEpilogue::kBias},         // 1033 chunks: the last slice shorter than the others
    {6144, 4096, ChainEpilogue::kRope, 64},         // q | k | v with RoPE: 48 heads of 128
    {6144, 4096, ChainEpilogue::kRope, 64, true},   // interleaved pairs
    {48, 40, ChainEpilogue::kRope, 4},              // 6 heads of 8
    {60, 8264, ChainEpilogue::kRope, 5, true},      // 3 heads of 10, slices cut short
};

ChainStage stage_of(const StageShape& shape) {
  ChainStage s;
  s.out = shape.out, s.in = shape.in, s.epilogue = shape.epilogue;
  s.rope_half = shape.rope_half, s.rope_interleaved = shape.rope_interleaved;
  return s;
}

// The share the kernel takes for the stage.
WarpShare share_of(const ChainStage& s, int64_t task, int warp) {
  return s.epilogue == ChainEpilogue::kRope ? chain_rope_share(s, task, warp) : chain_warp_share(s, task, warp);
}

std::string describe(const StageShape& s, int64_t blocks, int warps, int forced) {
  return "out " + std::to_string(s.out) + ", in " + std::to_string(s.in) + ", epilogue " +
         std::to_string(static_cast<int>(s.epilogue)) + ", " + std::to_string(blocks) + " blocks of " +
         std::to_string(warps) + " warps, slices forced " + std::to_string(forced);
}

TEST(DecodeChainPlan, EveryChunkOnceEveryOutputOnce) {
  for (const StageShape& shape : kShapes)
    for (int warps : {8, 24}) {
      // A planned stage is its shape, warps and slices (tasks follow): the grid only chooses the
      // slices, so each (warps, slices) of a shape is walked once.
      std::set<int> walked;
      for (int64_t blocks : {1, 7, 132, 264, 396})
        for (int forced : {0, 1, 2, 4, 8}) {
          if (forced > 0 && blocks != 132) continue;  // forced slices do not depend on the grid
          ChainStage s = stage_of(shape);
          plan_chain_stage(s, blocks, warps, forced);
          const std::string what = describe(shape, blocks, warps, forced);
          ASSERT_TRUE(s.slices == 1 || s.slices == 2 || s.slices == 4 || s.slices == 8) << what;
          if (s.slices > 1) {
            EXPECT_GE(s.in / 8 / s.slices, 32 * kChainGroup) << what;
          }
          if (forced > 0) {
            EXPECT_LE(s.slices, forced) << what;
          }
          if (!walked.insert(s.slices).second) continue;
          const int64_t n8 = s.in / 8;
          std::vector<int> summed(static_cast<size_t>(s.out * n8), 0);
          const int64_t outputs = s.epilogue == ChainEpilogue::kSwiglu ? s.out / 2 : s.out;
          std::vector<int> written(static_cast<size_t>(outputs), 0);
          // Block b takes tasks b, b + blocks, ...: every task once, so they are enumerated directly.
          for (int64_t task = 0; task < s.tasks; ++task)
            for (int warp = 0; warp < warps; ++warp) {
              const WarpShare share = share_of(s, task, warp);
              const int first = warp - share.slice;
              ASSERT_GE(first, 0) << what;
              ASSERT_LE(first + s.slices, warps) << what;
              for (int i = 0; i < s.slices; ++i) {
                const WarpShare other = share_of(s, task, first + i);
                EXPECT_EQ(other.unit, share.unit) << what;
                EXPECT_EQ(other.slice, i) << what;
              }
              if (!share.active) continue;
              for (int j = 0; j < kChainRows; ++j) {
                ASSERT_GE(share.row[j], 0) << what;
                ASSERT_LT(share.row[j], s.out) << what;
              }
              // Rows whose sums reach an output: both for SwiGLU (gate j, up j) and RoPE (a pair), else
              // those below out.
              const bool paired = s.epilogue == ChainEpilogue::kSwiglu || s.epilogue == ChainEpilogue::kRope;
              bool feeds[kChainRows];
              for (int j = 0; j < kChainRows; ++j) feeds[j] = paired || share.unit * kChainRows + j < s.out;
              if (s.epilogue == ChainEpilogue::kSwiglu) {
                EXPECT_EQ(share.row[0], share.unit) << what;
                EXPECT_EQ(share.row[1], share.unit + s.out / 2) << what;
              }
              if (s.epilogue == ChainEpilogue::kRope) {
                // Pair i of head h: both rows in the head, i apart from its start (2i interleaved), and
                // d / 2 (1 interleaved) apart from each other.
                const int64_t d = 2 * s.rope_half, h = share.unit / s.rope_half, i = share.unit % s.rope_half;
                EXPECT_EQ(share.row[0], h * d + (shape.rope_interleaved ? 2 * i : i)) << what;
                EXPECT_EQ(share.row[1] - share.row[0], shape.rope_interleaved ? 1 : s.rope_half) << what;
                EXPECT_EQ(share.row[1] / d, h) << what;
              }
              for (int lane = 0; lane < 32; ++lane)
                for (int64_t k = share.k_begin + lane; k < share.k_end; k += 32)
                  for (int j = 0; j < kChainRows; ++j)
                    if (feeds[j]) ++summed[static_cast<size_t>(share.row[j] * n8 + k)];
              if (share.slice != 0) continue;
              if (s.epilogue == ChainEpilogue::kSwiglu) {
                ++written[static_cast<size_t>(share.unit)];
              } else if (s.epilogue == ChainEpilogue::kRope) {
                for (int j = 0; j < kChainRows; ++j) ++written[static_cast<size_t>(share.row[j])];
              } else {
                for (int j = 0; j < kChainRows; ++j)
                  if (share.unit * kChainRows + j < s.out) ++written[static_cast<size_t>(share.unit * kChainRows + j)];
              }
            }
          for (size_t i = 0; i < summed.size(); ++i)
            ASSERT_EQ(summed[i], 1) << what << ": row " << i / n8 << ", chunk " << i % n8;
          for (size_t o = 0; o < written.size(); ++o) ASSERT_EQ(written[o], 1) << what << ": output " << o;
        }
    }
}

// The slices chosen take the fewest rounds of block tasks per unit of work among those allowed.
TEST(DecodeChainPlan, SlicesTakeTheFewestRounds) {
  for (const StageShape& shape : kShapes)
    for (int warps : {8, 24})
      for (int64_t blocks : {1, 7, 132, 264, 396}) {
        ChainStage s = stage_of(shape);
        plan_chain_stage(s, blocks, warps);
        const auto cost = [&](int slices) {
          const int64_t per_task = warps / slices;
          const int64_t tasks = (chain_units(s) + per_task - 1) / per_task;
          return static_cast<double>((tasks + blocks - 1) / blocks) / slices;
        };
        for (int slices = 1; slices <= kChainMaxSlices; slices *= 2) {
          if (slices > 1 && s.in / 8 / slices < 32 * kChainGroup) break;
          EXPECT_LE(cost(s.slices), cost(slices)) << describe(shape, blocks, warps, 0) << ": " << slices << " slices";
        }
      }
  // Llama-3-8B's o projection on the H200's 132 blocks of 24 warps: 2048 units in 342 tasks of four
  // slices (6 units each), three rounds, against 86 tasks of one slice in one round of whole rows.
  ChainStage o;
  o.out = 4096, o.in = 4096, o.epilogue = ChainEpilogue::kResidual;
  plan_chain_stage(o, 132, 24);
  EXPECT_EQ(o.slices, 4);
  EXPECT_EQ(o.tasks, 342);
}

}  // namespace
}  // namespace podkv::cuda
