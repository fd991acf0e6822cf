// How decode_chain (decode_chain.cu) shares each of its projections among the
// warps of its grid: plain C++ (no CUDA types), so that the CPU tests check the
// index arithmetic the kernel runs (tests/test_decode_chain_plan.cpp).
//
// A stage is one one-row product y = x · Wᵀ, W [out, in] in BF16, read as
// 16-byte chunks (8 weights; in % 8 == 0). A warp unit is kChainRows output rows
// (two consecutive rows; for SwiGLU's stacked W = [gate | up], gate row j and up
// row inter + j; for the q | k | v projection with RoPE in its epilogue, the two rows of one
// rotation pair of a head, chain_rope_share). A block of `warps` warps takes tasks of warps / slices units:
// each unit's `slices` warps sum one slice of the chunks each (a span, a multiple
// of 32 chunks, per slice), and the block adds the slices' sums in slice order.
// Block b of a grid of G runs tasks b, b + G, ...; lane l of a warp sums chunks
// k_begin + l, k_begin + l + 32, ... below k_end.
#pragma once

#include <cstdint>

#include "util/host_device.h"

namespace podkv::cuda {

constexpr int kChainMaxSlices = 8;  // slices per unit: 1, 2, 4 or 8 (a block's warps a multiple of 8)
constexpr int kChainRows = 2;    // output rows per warp unit
constexpr int kChainGroup = 4;   // chunks per lane and row loaded before the first product
static_assert(kChainRows == 2, "SwiGLU's units pair a gate row with an up row");

enum class ChainEpilogue : int {
  kResidual,  // y[o] += sum (the residual stream)
  kSwiglu,    // y[j] = silu(gate_j) * up_j
  kBias,      // y[o] = sum (+ bias[o])
  kRope,      // q | k | v (+ bias), q and k rotated by RoPE, k and v written to the KV pool (decode_chain.cu)
};

struct ChainStage {
  const uint16_t* w = nullptr;  // [out, in] BF16
  int64_t out = 0, in = 0;
  ChainEpilogue epilogue = ChainEpilogue::kBias;
  int warps = 8;      // per block (a multiple of kChainMaxSlices)
  int slices = 1;     // warps per unit: 1, 2, 4 or 8
  int64_t tasks = 0;  // block tasks
  // kRope: out = heads x 2 rope_half rows, head after head (chain_rope_share).
  int64_t rope_half = 0;
  bool rope_interleaved = false;
};

// The rows one warp of a task reads and the chunks its lane 0 sums (lane l: + l).
struct WarpShare {
  int64_t row[kChainRows];  // rows of W (past the end: the first row again, its sum unused)
  int64_t unit;             // the warp unit: outputs 2 unit, 2 unit + 1 (SwiGLU: output unit)
  int64_t k_begin, k_end;   // chunks
  int slice;
  bool active;  // a unit below the stage's count
};

PODKV_HOST_DEVICE inline int64_t chain_units(const ChainStage& s) {
  return s.epilogue == ChainEpilogue::kSwiglu ? s.out / 2 : (s.out + kChainRows - 1) / kChainRows;
}

// Chunks per slice: the slice's lanes step by 32 chunks, so a span is a multiple of 32.
PODKV_HOST_DEVICE inline int64_t chain_span(int64_t in, int slices) {
  const int64_t n8 = in / 8;
  return slices == 1 ? n8 : (n8 + 32 * slices - 1) / (32 * slices) * 32;
}

PODKV_HOST_DEVICE inline WarpShare chain_warp_share(const ChainStage& s, int64_t task, int warp) {
  WarpShare share{};
  const int per_task = s.warps / s.slices;
  share.unit = task * per_task + warp / s.slices;
  share.slice = warp % s.slices;
  share.active = share.unit < chain_units(s);
  const int64_t n8 = s.in / 8, span = chain_span(s.in, s.slices);
  share.k_begin = span * share.slice;
  share.k_end = span * (share.slice + 1) < n8 ? span * (share.slice + 1) : n8;
  if (s.epilogue == ChainEpilogue::kSwiglu) {
    share.row[0] = share.unit;
    share.row[1] = share.unit + s.out / 2;
  } else {
    for (int j = 0; j < kChainRows; ++j) {
      const int64_t o = share.unit * kChainRows + j;
      share.row[j] = o < s.out ? o : share.unit * kChainRows;
    }
  }
  return share;
}

// A kRope stage's share: the units, slices and chunks of a kBias stage of as many rows (out / 2 units),
// but unit u is pair i = u % rope_half of head h = u / rope_half, rows h d + i and h d + i + d / 2 (d =
// 2 rope_half), or h d + 2i and h d + 2i + 1 with rope_interleaved, so that one warp holds both
// elements of a rotation. A function of its own: the other stages' code (the kernel's registers are
// at the cap of 80) stays as it was.
PODKV_HOST_DEVICE inline WarpShare chain_rope_share(const ChainStage& s, int64_t task, int warp) {
  WarpShare share = chain_warp_share(s, task, warp);
  if (!share.active) return share;
  const int32_t unit = static_cast<int32_t>(share.unit), half = static_cast<int32_t>(s.rope_half);
  const int32_t head = unit / half, i = unit - head * half;
  const int32_t row0 = 2 * head * half + (s.rope_interleaved ? 2 * i : i);
  share.row[0] = row0;
  share.row[1] = row0 + (s.rope_interleaved ? 1 : half);
  return share;
}

// Slices for a stage on a grid of `blocks` blocks of `warps` warps: the fewest rounds of tasks per
// block for the stage's weights, counted in units of in / slices (rounds / slices, the smallest; ties:
// fewer slices, fewer block-wide sums). A slice keeps at least kChainGroup chunks per lane
// (in / 8 / slices >= 32 kChainGroup).
inline int chain_slices(int64_t units, int64_t in, int64_t blocks, int warps) {
  int best = 1;
  double best_cost = 0;
  for (int slices = 1; slices <= kChainMaxSlices; slices *= 2) {
    if (slices > 1 && in / 8 / slices < 32 * kChainGroup) break;
    const int64_t per_task = warps / slices;
    const int64_t tasks = (units + per_task - 1) / per_task;
    const double cost = static_cast<double>((tasks + blocks - 1) / blocks) / slices;
    if (slices == 1 || cost < best_cost) best = slices, best_cost = cost;
  }
  return best;
}

// Fills a stage's warps, slices and tasks for a grid of `blocks` blocks of `warps` warps (a multiple
// of kChainMaxSlices). slices_override 1, 2, 4 or 8 where the inputs allow: a tuning knob; 0:
// chain_slices.
inline void plan_chain_stage(ChainStage& s, int64_t blocks, int warps, int slices_override = 0) {
  const int64_t units = chain_units(s);
  int slices = chain_slices(units, s.in, blocks, warps);
  if (slices_override > 0) {
    slices = 1;
    while (2 * slices <= slices_override && 2 * slices <= kChainMaxSlices &&
           s.in / 8 / (2 * slices) >= 32 * kChainGroup)
      slices *= 2;
  }
  s.warps = warps;
  s.slices = slices;
  const int64_t per_task = warps / slices;
  s.tasks = (units + per_task - 1) / per_task;
}

}  // namespace podkv::cuda
