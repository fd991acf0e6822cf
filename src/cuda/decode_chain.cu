// A decode row's layer after attention, in one persistent launch: x += o(attn);
// h = silu(gate) * up of RMSNorm(x); x += down(h); then the next layer's
// q | k | v projection of its RMSNorm(x). Four one-row GEMVs (Llama-3-8B: 34,
// 235, 117 and 50 MB of weights) that one launch each ran at 2.5-4.0 TB/s
// against the 4.2-4.5 TB/s a long read reaches (docs/gpu-bench/kernel-tuning,
// session 20): a launch's ramp and tail, not its loop, lose the difference.
// Here every block of a cooperative grid (all resident) works through each
// projection's tasks (decode_chain_plan.h) and waits at a grid barrier for the
// projection's input; before it waits it issues its first loads of the next
// projection's weights, which depend on nothing, so the memory keeps streaming
// through the barrier.
//
// Arithmetic: as gemv_bf16_row_kernel (kChainRows = 2 rows per warp, kChainGroup
// = 4 chunks per lane in flight, float32 sums per lane in chunk order, the slices
// added in order), with the input x in shared memory (read once per block from
// L2, not per warp); the norms as rms_norm_kernel (squares summed in double).
// The slices differ from the per-launch kernels', so the sums agree to float32
// rounding, not bit for bit; a launch is deterministic.
//
// With a ChainRope the last stage also does the next layer's RoPE and KV write (one launch less per
// layer): its warp units are rotation pairs of a head, so that lane 0 holds both elements of a pair,
// rotates them as split_qkv_rope_kv_write_kernel does (the same sums, the same double arithmetic) and
// writes q, k, v and the bf16 entries, whose addresses and angles each block takes while it waits at
// the stage's barrier.
#include "cuda/cuda_check.h"
#include "cuda/decode_chain_plan.h"
#include "cuda/elements.cuh"
#include "cuda/gemv_row.cuh"
#include "cuda/grid_barrier.cuh"
#include "cuda/kernels.h"
#include "cuda/paged.cuh"
#include "cuda/pdl.cuh"
#include "cuda/rope.cuh"
#include "kv/token_classes.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>
#ifdef PODKV_CHAIN_TRACE
#include <cstdio>  // write_chain_trace
#include <vector>
#endif

namespace podkv::cuda {

namespace {

constexpr int R = kChainRows;

// A diagnostic build only (CUDA_FLAGS=-DPODKV_CHAIN_TRACE, never the default): thread 0 of each block
// stamps %globaltimer (ns) at kTraceEvents points of each launch: 0 entry, 1 o's input read, 2 o done,
// 3 past barrier 1 and the norm, 4 gate | up done, 5 past barrier 2 and h read, 6 down done, 7 past
// barrier 3 and the norm (0 on the last layer), 8 the end. The last kTraceLaunches launches of each
// block are kept (a block's own count picks the slot, so slot n of every block is one launch) and
// written at exit to $PODKV_CHAIN_TRACE_FILE, one line per launch and block: the slot, the block, the
// stamps.
#ifdef PODKV_CHAIN_TRACE
constexpr int kTraceLaunches = 64, kTraceBlocks = 512, kTraceEvents = 9;
__device__ unsigned long long chain_trace[kTraceLaunches][kTraceBlocks][kTraceEvents];
__device__ unsigned chain_trace_count[kTraceBlocks];
__device__ __forceinline__ unsigned long long* trace_row() {
  if (threadIdx.x != 0 || blockIdx.x >= kTraceBlocks) return nullptr;
  const unsigned n = chain_trace_count[blockIdx.x]++;
  return chain_trace[n % kTraceLaunches][blockIdx.x];
}
__device__ __forceinline__ void stamp(unsigned long long* row, int event) {
  if (row == nullptr) return;
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  row[event] = t;
}
#else
__device__ __forceinline__ unsigned long long* trace_row() { return nullptr; }
__device__ __forceinline__ void stamp(unsigned long long*, int) {}
#endif

enum StageIndex { kO, kGateUp, kDown, kNextQkv, kStages };

struct ChainParams {
  ChainStage stage[kStages];  // stage[kNextQkv].tasks == 0: the last layer, no next projection
  const float* attn;          // [q_dim]
  float* x;                   // [hidden]
  float* h;                   // [inter]
  float* qkv;                 // [qkv_out]
  const float *mlp_norm, *next_norm, *bias;
  double eps;
  int64_t hidden;
  unsigned* barrier;
  int64_t prefetch_bytes;  // per row: prefetch_first_task
  bool one_word_barrier;   // grid_barrier's protocol: one 64-bit word (the default) or the two counters
  ChainRope rope;          // decode_chain_kernel<W, true>: stage[kNextQkv] is kRope, into rope's q, k, v (not qkv)
  // The o, gate | up and down stages hand out their tasks by a counter each (run_stage), zero at a
  // launch's start; block 0 takes a stage's counter back to zero past the barrier after it, when every
  // block has taken its last task (the last layer, with no barrier after down, keeps down static). The
  // q | k | v stage keeps fixed tasks: no barrier follows it in the launch.
  bool dynamic_tasks;
};
// The counters' words in `barrier` (kernels.h's kDecodeChainBarrierWords): past the grid barrier's own
// words, one cache line each.
constexpr int kChainCounters = kGridBarrierWords, kChainCounterStride = 16;
static_assert(kChainCounters + kChainCounterStride * 3 <= kDecodeChainBarrierWords, "three task counters");

// What the RoPE epilogue reads, taken by each block at the stage's barrier (the step's metadata
// only): the angles' sines and cosines (rope_sincos), and the entries of the row's keys (KV heads 0
// .. H_kv - 1), then its values (null: the layout keeps none).
struct RopeShared {
  double sin[kMaxHeadDim / 2], cos[kMaxHeadDim / 2];
  uint8_t* entry[2 * kChainRopeMaxKvHeads];
};

__device__ __forceinline__ void prepare_rope(const ChainRope& r, RopeShared& sh) {
  const int half = r.step.head_dim / 2, kv = r.step.num_kv_heads;
  for (int i = threadIdx.x; i < half; i += blockDim.x) rope_sincos(i, r.positions[0], r.inv_freq, sh.sin[i], sh.cos[i]);
  for (int t = threadIdx.x; t < 2 * kv; t += blockDim.x)
    sh.entry[t] = entry_of_row(r.step, r.layer, 0, t % kv, t < kv ? kKeys : kValues);
}

// Unit `unit` of the q | k | v projection, pair i of head `head` (its rows, + bias, are elements ea and
// eb of the head: chain_rope_share's, taken again from the unit so that the rows need not stay in
// registers through the task's loop), as split_qkv_rope_kv_write_kernel writes it: q and k rotated
// (rotate_pair_by's arithmetic), into q, k or v; keys and values encoded into their entries as
// encode_entry<BF16> does.
__device__ __forceinline__ void rope_epilogue(const ChainStage& s, int64_t unit, const float (&acc)[R],
                                              const float* bias, const ChainRope& r, const RopeShared& sh) {
  const int d = r.step.head_dim, kv = r.step.num_kv_heads;
  const int half = static_cast<int>(s.rope_half);
  const int u32 = static_cast<int>(unit), head = u32 / half, i = u32 - head * half;
  const int ea = s.rope_interleaved ? 2 * i : i, eb = s.rope_interleaved ? 2 * i + 1 : i + half;
  const int64_t row_a = static_cast<int64_t>(head) * d + ea, row_b = static_cast<int64_t>(head) * d + eb;
  float a = acc[0] + (bias != nullptr ? bias[row_a] : 0.0f);
  float b = acc[1] + (bias != nullptr ? bias[row_b] : 0.0f);
  if (head < r.heads + kv) rotate_values(a, b, sh.sin[i], sh.cos[i]);
  if (head < r.heads) {
    r.q[row_a] = a, r.q[row_b] = b;
    return;
  }
  const auto [kind, h] = kv_unit(head, r.heads, kv);
  float* out = (kind == kKeys ? r.k : r.v) + static_cast<int64_t>(h) * d;
  out[ea] = a, out[eb] = b;
  uint16_t* e = reinterpret_cast<uint16_t*>(sh.entry[(kind == kKeys ? 0 : kv) + h]);
  if (e != nullptr) e[ea] = f32_to_bf16_bits(a), e[eb] = f32_to_bf16_bits(b);
}

// The warp's rows of W as 16-byte chunks.
struct WarpRows {
  const uint4* row[R];
};

__device__ __forceinline__ WarpRows warp_rows(const ChainStage& s, const WarpShare& share) {
  WarpRows rows;
#pragma unroll
  for (int j = 0; j < R; ++j) rows.row[j] = reinterpret_cast<const uint4*>(s.w + share.row[j] * s.in);
  return rows;
}

// Chunks k, k + 32, ..., k + 32 (U - 1) of each row, all loads issued before any product.
template <int U>
__device__ __forceinline__ void load_group(const WarpRows& rows, int64_t k, uint4 (&wv)[R][U]) {
#pragma unroll
  for (int u = 0; u < U; ++u)
#pragma unroll
    for (int j = 0; j < R; ++j) wv[j][u] = load_nc(rows.row[j] + k + 32 * u);
}

// acc[j] += the group's chunks times x (xs4: x in shared memory, two float4 per chunk), in chunk order.
template <int U>
__device__ __forceinline__ void multiply_group(const uint4 (&wv)[R][U], const float4* xs4, int64_t k,
                                               float (&acc)[R]) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const float4 a = xs4[2 * (k + 32 * u)], b = xs4[2 * (k + 32 * u) + 1];
#pragma unroll
    for (int j = 0; j < R; ++j) acc[j] += dot8(wv[j][u], a, b);
  }
}

// Asks into L2 the first `bytes` (per row) of this warp's share of its first task of stage s (the
// weights depend on nothing): they stream from memory while the block waits at the barrier for the
// stage's input, and the stage's first loads find them in L2. sm_90's bulk prefetch, one per row from
// lanes 0 .. R - 1: no registers, nothing to wait for.
template <bool kRopeRows = false>
__device__ __forceinline__ void prefetch_first_task(const ChainStage& s, int64_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const int lane = threadIdx.x % 32;
  if (blockIdx.x >= s.tasks || lane >= R || bytes <= 0) return;
  const WarpShare share =
      kRopeRows ? chain_rope_share(s, blockIdx.x, threadIdx.x / 32) : chain_warp_share(s, blockIdx.x, threadIdx.x / 32);
  if (!share.active) return;
  const int64_t chunks = share.k_end - share.k_begin < bytes / 16 ? share.k_end - share.k_begin : bytes / 16;
  if (chunks <= 0) return;
  const int64_t row = lane == 0 ? share.row[0] : share.row[R - 1];  // (not an array index: no local memory)
  const uint4* from = reinterpret_cast<const uint4*>(s.w + row * s.in) + share.k_begin;
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(from), "r"(static_cast<uint32_t>(16 * chunks))
               : "memory");
#endif
}

// xs[0, n) = src, n % 4 == 0 (L2 loads: other blocks of this launch may have written src). Blocks
// of W warps, as below.
template <int W>
__device__ __forceinline__ void load_input(float* xs, const float* src, int64_t n) {
  float4* xs4 = reinterpret_cast<float4*>(xs);
  const float4* src4 = reinterpret_cast<const float4*>(src);
  for (int64_t i = threadIdx.x; i < n / 4; i += 32 * W) xs4[i] = __ldcg(src4 + i);
  __syncthreads();
}

// xs[0, n) = RMSNorm(x) * weight (n % 4 == 0) as rms_norm_kernel computes it: squares summed in
// double, the product float32. Every block takes the norm itself (n floats from L2) rather than wait
// for one block's.
template <int W>
__device__ __forceinline__ void load_normed(float* xs, const float* x, const float* weight, int64_t n, double eps) {
  float4* xs4 = reinterpret_cast<float4*>(xs);
  const float4* x4 = reinterpret_cast<const float4*>(x);
  const float4* w4 = reinterpret_cast<const float4*>(weight);
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < n / 4; i += 32 * W) {
    const float4 v = __ldcg(x4 + i);
    xs4[i] = v;
    ss += static_cast<double>(v.x) * v.x + static_cast<double>(v.y) * v.y + static_cast<double>(v.z) * v.z +
          static_cast<double>(v.w) * v.w;
  }
  const float inv = inverse_rms<32 * W>(ss, n, eps);
  for (int64_t i = threadIdx.x; i < n / 4; i += 32 * W) {
    const float4 v = xs4[i], w = w4[i];
    xs4[i] = make_float4(v.x * inv * w.x, v.y * inv * w.y, v.z * inv * w.z, v.w * inv * w.w);
  }
  __syncthreads();
}

// One block task of stage s on the input xs (shared memory), written to y by epilogue E. partial:
// [s.warps][R] floats of shared memory for the slices' sums. U: chunks per lane and row in flight.
template <ChainEpilogue E, int U>
__device__ __forceinline__ void run_task(const ChainStage& s, int64_t task, const float* xs, float* y,
                                         const float* bias, float (*partial)[R], const ChainParams& p,
                                         const RopeShared* rope_shared) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float4* xs4 = reinterpret_cast<const float4*>(xs);
  const WarpShare share =
      E == ChainEpilogue::kRope ? chain_rope_share(s, task, warp) : chain_warp_share(s, task, warp);
  float acc[R] = {};
  if (share.active) {  // the same for the whole warp
    const WarpRows rows = warp_rows(s, share);
    int64_t k = share.k_begin + lane;
    for (; k + 32 * (U - 1) < share.k_end; k += 32 * U) {
      uint4 wv[R][U];
      load_group(rows, k, wv);
      multiply_group(wv, xs4, k, acc);
    }
    if (k < share.k_end) {
      // The last chunks, fewer than U per lane, loaded together before their products too (a chunk
      // past the end loads chunk k again, unused).
      uint4 wv[R][U - 1];
#pragma unroll
      for (int u = 0; u < U - 1; ++u) {
        const int64_t c = k + 32 * u < share.k_end ? k + 32 * u : k;
#pragma unroll
        for (int j = 0; j < R; ++j) wv[j][u] = load_nc(rows.row[j] + c);
      }
#pragma unroll
      for (int u = 0; u < U - 1; ++u) {
        if (k + 32 * u >= share.k_end) break;
        const float4 a = xs4[2 * (k + 32 * u)], b = xs4[2 * (k + 32 * u) + 1];
#pragma unroll
        for (int j = 0; j < R; ++j) acc[j] += dot8(wv[j][u], a, b);
      }
    }
#pragma unroll
    for (int j = 0; j < R; ++j) acc[j] = warp_sum(acc[j]);
  }
  if (s.slices > 1) {
    if (lane == 0)
#pragma unroll
      for (int j = 0; j < R; ++j) partial[warp][j] = acc[j];
    __syncthreads();
    const int first = warp - share.slice;
#pragma unroll
    for (int j = 0; j < R; ++j) {
      float t = partial[first][j];
      for (int i = 1; i < s.slices; ++i) t += partial[first + i][j];
      acc[j] = t;
    }
    __syncthreads();  // the next task writes `partial` again
  }
  if (!share.active || share.slice != 0 || lane != 0) return;
  if constexpr (E == ChainEpilogue::kSwiglu) {
    __stcg(y + share.unit, silu_mul_value(acc[0], acc[1]));
  } else if constexpr (E == ChainEpilogue::kRope) {
    rope_epilogue(s, share.unit, acc, bias, p.rope, *rope_shared);
  } else {
#pragma unroll
    for (int j = 0; j < R; ++j) {
      const int64_t o = share.unit * R + j;
      if (o >= s.out) continue;
      if constexpr (E == ChainEpilogue::kResidual) __stcg(y + o, __ldcg(y + o) + acc[j]);
      else y[o] = acc[j] + (bias != nullptr ? bias[o] : 0.0f);
    }
  }
}

// The block's tasks of stage s (s.warps == W). With counter null: blockIdx.x, blockIdx.x + gridDim.x,
// ... With a counter (a word of device memory, zero when the stage begins): task blockIdx.x first (the
// task prefetch_first_task asked into L2), then gridDim.x + the counter's next value, until past the
// last, so that a block that streams faster than others takes more of the stage and the blocks end
// closer together (a block's tasks are not fixed in advance: every task's sums are the block's own, in
// the same order whichever block runs it, so the outputs are the same bits). Thread 0 asks for the
// next task as the current one begins and publishes it after it: the atomic's round trip overlaps the
// task's loads.
template <ChainEpilogue E, int W, int U>
__device__ __forceinline__ void run_stage(const ChainStage& s, const float* xs, float* y, const float* bias,
                                          const ChainParams& p, const RopeShared* rope_shared = nullptr,
                                          unsigned* counter = nullptr) {
  __shared__ float partial[W][R];
  if (counter == nullptr) {
    for (int64_t task = blockIdx.x; task < s.tasks; task += gridDim.x)
      run_task<E, U>(s, task, xs, y, bias, partial, p, rope_shared);
    return;
  }
  __shared__ unsigned next_task;
  for (int64_t task = blockIdx.x; task < s.tasks;) {
    unsigned next = 0;
    if (threadIdx.x == 0) next = gridDim.x + atomicAdd(counter, 1u);
    run_task<E, U>(s, task, xs, y, bias, partial, p, rope_shared);
    if (threadIdx.x == 0) next_task = next;
    __syncthreads();
    task = next_task;
    __syncthreads();  // next_task is written again
  }
}

// Stage `stage`'s task counter (ChainParams::dynamic_tasks), or null: static tasks.
__device__ __forceinline__ unsigned* task_counter(const ChainParams& p, int stage) {
  return p.dynamic_tasks ? p.barrier + kChainCounters + kChainCounterStride * stage : nullptr;
}

// Past the grid barrier after stage `stage`, every block has taken its last task of it: block 0 takes
// the counter back to zero for the next launch.
__device__ __forceinline__ void reset_task_counter(const ChainParams& p, int stage) {
  if (p.dynamic_tasks && blockIdx.x == 0 && threadIdx.x == 0) *task_counter(p, stage) = 0;
}

// Blocks of W warps, all resident at once (a cooperative launch) and the registers capped at 80 so
// that 24 warps fit a multiprocessor: W = 8 three blocks, W = 24 one (80 registers, no spills).
// kRope: the last stage with the next layer's RoPE and KV write (p.rope), a kernel of its own so
// that the other's code and registers stay as they were.
// U: chunks per lane and row in flight, 4 (registers capped at 80: 24 warps a multiprocessor) or 8
// (blocks of 8 warps only, capped at 128 registers: two blocks a multiprocessor, the default).
template <int W, bool kRope, int U>
__global__ void __launch_bounds__(32 * W, (U == 4 ? 24 : 16) / W) decode_chain_kernel(const ChainParams p) {
  extern __shared__ float4 shared_x[];  // the stage's input: max(q_dim, hidden, inter) floats
  float* xs = reinterpret_cast<float*>(shared_x);
  unsigned long long* trace = trace_row();
  stamp(trace, 0);
  // x += o(attn): attn comes from the launch before. The o projection's first weights depend on
  // nothing: asked into L2 before the wait for that launch (a programmatic dependent, this launch's
  // blocks start while the merge before it runs; without the attribute pdl_wait is a no-op).
  prefetch_first_task(p.stage[kO], p.prefetch_bytes);
  pdl_wait();
  load_input<W>(xs, p.attn, p.stage[kO].in);
  stamp(trace, 1);
  run_stage<ChainEpilogue::kResidual, W, U>(p.stage[kO], xs, p.x, nullptr, p, nullptr, task_counter(p, kO));
  stamp(trace, 2);
  // h = silu(gate) * up of RMSNorm(x) * mlp_norm.
  prefetch_first_task(p.stage[kGateUp], p.prefetch_bytes);
  grid_barrier(p.barrier, p.one_word_barrier);
  reset_task_counter(p, kO);
  load_normed<W>(xs, p.x, p.mlp_norm, p.hidden, p.eps);
  stamp(trace, 3);
  run_stage<ChainEpilogue::kSwiglu, W, U>(p.stage[kGateUp], xs, p.h, nullptr, p, nullptr, task_counter(p, kGateUp));
  stamp(trace, 4);
  // x += down(h).
  prefetch_first_task(p.stage[kDown], p.prefetch_bytes);
  grid_barrier(p.barrier, p.one_word_barrier);
  reset_task_counter(p, kGateUp);
  load_input<W>(xs, p.h, p.stage[kDown].in);
  stamp(trace, 5);
  const bool last_layer = p.stage[kNextQkv].tasks == 0;  // the same for every block
  run_stage<ChainEpilogue::kResidual, W, U>(p.stage[kDown], xs, p.x, nullptr, p, nullptr,
                                            last_layer ? nullptr : task_counter(p, kDown));
  stamp(trace, 6);
  if (last_layer) {
    stamp(trace, 8);
    if (trace != nullptr) trace[7] = 0;  // no next projection
    return;
  }
  // The next layer's q | k | v of RMSNorm(x) * next_norm (+ bias).
  prefetch_first_task<kRope>(p.stage[kNextQkv], p.prefetch_bytes);
  if constexpr (kRope) {
    // The angles and the entries (the step's metadata only), while the last blocks arrive; visible
    // after the barrier's last __syncthreads.
    __shared__ RopeShared rope_shared;
    grid_barrier(p.barrier, p.one_word_barrier, [&] { prepare_rope(p.rope, rope_shared); });
    reset_task_counter(p, kDown);
    // Attention, the kernel after this one, may start its blocks (pdl.cuh): it reads the step's
    // metadata while this stage streams its weights, and waits for this launch to finish.
    pdl_launch_dependents();
    load_normed<W>(xs, p.x, p.next_norm, p.hidden, p.eps);
    stamp(trace, 7);
    run_stage<ChainEpilogue::kRope, W, U>(p.stage[kNextQkv], xs, nullptr, p.bias, p, &rope_shared);
  } else {
    grid_barrier(p.barrier, p.one_word_barrier);
    reset_task_counter(p, kDown);
    // The RoPE + KV write kernel after this one may start its blocks (pdl.cuh): it reads the step's
    // metadata while this stage streams its weights, and waits for this launch to finish.
    pdl_launch_dependents();
    load_normed<W>(xs, p.x, p.next_norm, p.hidden, p.eps);
    stamp(trace, 7);
    run_stage<ChainEpilogue::kBias, W, U>(p.stage[kNextQkv], xs, p.qkv, p.bias, p);
  }
  stamp(trace, 8);
}

#ifdef PODKV_CHAIN_TRACE
// At exit (registered after the CUDA runtime's own handlers, so it runs before them): the kept stamps
// to $PODKV_CHAIN_TRACE_FILE. Slots that no launch reached are all zero and skipped.
void write_chain_trace() {
  const char* path = std::getenv("PODKV_CHAIN_TRACE_FILE");
  if (path == nullptr || cudaDeviceSynchronize() != cudaSuccess) return;
  std::vector<unsigned long long> t(static_cast<size_t>(kTraceLaunches) * kTraceBlocks * kTraceEvents);
  if (cudaMemcpyFromSymbol(t.data(), chain_trace, t.size() * sizeof(t[0])) != cudaSuccess) return;
  FILE* f = std::fopen(path, "w");
  if (f == nullptr) return;
  for (int n = 0; n < kTraceLaunches; ++n)
    for (int b = 0; b < kTraceBlocks; ++b) {
      const unsigned long long* e = &t[(static_cast<size_t>(n) * kTraceBlocks + b) * kTraceEvents];
      if (e[0] == 0) continue;
      std::fprintf(f, "%d %d", n, b);
      for (int i = 0; i < kTraceEvents; ++i) std::fprintf(f, " %llu", e[i]);
      std::fprintf(f, "\n");
    }
  std::fclose(f);
}
void register_chain_trace() {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(write_chain_trace); });
}
#else
void register_chain_trace() {}
#endif

// Tuning knobs, read once: PODKV_CUDA_CHAIN_WARPS=8 or 24 warps per block (default 8);
// PODKV_CUDA_CHAIN_BLOCKS=N blocks per multiprocessor, at most what fits (default 2; 0: all that fit,
// three of 8 warps); PODKV_CUDA_CHAIN_SLICES=N (1, 2, 4, 8) slices for every stage whose inputs allow
// (0 or unset: chosen); PODKV_CUDA_CHAIN_PREFETCH=B bytes per row asked into L2 before each barrier
// (default 1024); PODKV_CUDA_CHAIN_GROUP=4 or 8 (chain_group); PODKV_CUDA_CHAIN_COOPERATIVE=0,
// PODKV_CUDA_CHAIN_PDL=0 (decode_chain); PODKV_CUDA_CHAIN_BARRIER=0 (grid_barrier's two counters). The
// warps and blocks are the fastest of session 27's sweep on an H200 (Llama-3-8B shape, batch 1, 4K,
// tok/s of two passes): 8 warps x 2 blocks, no prefetch 197.1; the same with 1 KB
// prefetched 197.0, with 4 KB 190.4; 24 warps x 1 block 186.2 (4 KB: 179.8); 8 warps x 1 block 154.8;
// the per-launch kernels 185.8. Why 16 warps per multiprocessor beat 24, and why 4 KB of prefetch
// costs, was not measured (a guess: fewer warps reach each barrier sooner, and the prefetches compete
// with the stage still streaming its weights). The 1 KB prefetch and groups of 8 are session 42's, on
// two H100s: see chain_group.
int env_int(const char* name, int fallback = 0) {
  const char* s = std::getenv(name);
  return s != nullptr ? std::max(0, std::atoi(s)) : fallback;
}

int chain_warps() {
  static const int warps = env_int("PODKV_CUDA_CHAIN_WARPS", 8) == 24 ? 24 : 8;
  return warps;
}

// Chunks per lane and row in flight: eight in blocks of 8 warps unless PODKV_CUDA_CHAIN_GROUP=4 (24-warp
// blocks keep four). Each lane adds its chunks' products in the same order either way (the outputs
// should be the same bits; the tests compare them within float32 rounding). Session 42 on two H100s,
// batch 1, three (4K) and two (32K) interleaved passes each: eight chunks with 1 KB a row prefetched
// against four with none 1.004x / 1.009x at 4K and 1.012x / 1.008x at 32K; the prefetch alone 1.002x /
// 1.008x and 1.006x / 1.007x; eight alone 1.000x / 1.003x at 4K and 1.003x at 32K. Not timed on an
// H200 (none was lent for it).
int chain_group() {
  static const int group = env_int("PODKV_CUDA_CHAIN_GROUP", 8) == 4 ? kChainGroup : 8;
  return group;
}

using ChainKernel = void (*)(ChainParams);
template <bool kRope>
ChainKernel chain_kernel_of(int warps) {
  if (warps == 24) return decode_chain_kernel<24, kRope, kChainGroup>;
  return chain_group() == 8 ? decode_chain_kernel<8, kRope, 8> : decode_chain_kernel<8, kRope, kChainGroup>;
}
ChainKernel chain_kernel(int warps, bool rope) { return rope ? chain_kernel_of<true>(warps) : chain_kernel_of<false>(warps); }

// Blocks per multiprocessor unless PODKV_CUDA_CHAIN_BLOCKS says otherwise (see above).
constexpr int kDefaultBlocksPerSm = 2;

// Blocks per multiprocessor of the kernel of `warps` warps (with the RoPE stage or not) with `smem`
// bytes of dynamic shared memory (0: it cannot run cooperatively with that much on this device, or a
// launch of it failed), asked once per kernel and size.
std::mutex known_mutex;
std::map<std::tuple<int, size_t, bool>, int> known_blocks;

int chain_blocks_per_sm(int warps, size_t smem, bool rope) {
  const std::lock_guard<std::mutex> lock(known_mutex);
  const auto it = known_blocks.find({warps, smem, rope});
  if (it != known_blocks.end()) return it->second;
  const ChainKernel kernel = chain_kernel(warps, rope);
  int device = 0, cooperative = 0, optin = 0, blocks = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device), "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
             "cudaDeviceGetAttribute");
  cudaFuncAttributes attributes{};
  check_cuda(cudaFuncGetAttributes(&attributes, kernel), "cudaFuncGetAttributes");
  if (cooperative != 0 && smem + attributes.sharedSizeBytes <= static_cast<size_t>(optin)) {
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "decode_chain_kernel");
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, 32 * warps, smem),
               "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    static const int forced = env_int("PODKV_CUDA_CHAIN_BLOCKS", kDefaultBlocksPerSm);
    if (forced > 0) blocks = std::min(blocks, forced);
  }
  known_blocks.emplace(std::make_tuple(warps, smem, rope), blocks);
  return blocks;
}

void decline_from_now_on(int warps, size_t smem, bool rope) {
  const std::lock_guard<std::mutex> lock(known_mutex);
  known_blocks[{warps, smem, rope}] = 0;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The grid and shared memory of a chain for `a` (blocks 0: it does not apply).
struct ChainLaunch {
  int warps = 0;
  bool rope = false;
  int64_t blocks = 0;
  size_t smem = 0;
};

// Whether the RoPE stage takes this step and projection (kernels.h's DecodeChain::rope).
bool decode_chain_rope_fits(const ChainRope& r, int64_t qkv_out) {
  const DeviceStep& s = r.step;
  const int kv = s.num_kv_heads, d = s.head_dim;
  return static_cast<KvDType>(s.dtype) == KvDType::BF16 && s.rows == 1 && s.num_prefill_tiles == 0 && kv >= 1 &&
         kv <= kChainRopeMaxKvHeads && d >= 2 && d % 2 == 0 && d <= kMaxHeadDim && r.heads >= kv &&
         r.heads % kv == 0 && qkv_out == static_cast<int64_t>(r.heads + 2 * kv) * d && r.layer >= 0 &&
         r.layer < s.num_layers && r.positions != nullptr && r.inv_freq != nullptr && r.q != nullptr &&
         r.k != nullptr && r.v != nullptr;
}

ChainLaunch chain_launch(const DecodeChain& a, int num_sms) {
  if (a.hidden <= 0 || a.q_dim <= 0 || a.inter <= 0) return {};
  if (a.hidden % 8 != 0 || a.q_dim % 8 != 0 || a.inter % 8 != 0) return {};
  for (const void* p : {static_cast<const void*>(a.wo), static_cast<const void*>(a.w_gate_up),
                        static_cast<const void*>(a.w_down), static_cast<const void*>(a.attn),
                        static_cast<const void*>(a.x), static_cast<const void*>(a.h),
                        static_cast<const void*>(a.mlp_norm)})
    if (p == nullptr || !aligned16(p)) return {};
  if (a.wqkv != nullptr && (a.qkv_out <= 0 || !aligned16(a.wqkv) || a.next_norm == nullptr ||
                            !aligned16(a.next_norm) || (a.rope == nullptr ? a.qkv == nullptr : !decode_chain_rope_fits(*a.rope, a.qkv_out))))
    return {};
  ChainLaunch launch;
  launch.warps = chain_warps();
  launch.smem = sizeof(float) * static_cast<size_t>(std::max({a.hidden, a.q_dim, a.inter}));
  launch.rope = a.wqkv != nullptr && a.rope != nullptr;
  launch.blocks = static_cast<int64_t>(chain_blocks_per_sm(launch.warps, launch.smem, launch.rope)) * num_sms;
  return launch;
}

}  // namespace

bool decode_chain_applies(const DecodeChain& args, int num_sms) { return chain_launch(args, num_sms).blocks > 0; }

bool decode_chain(const DecodeChain& a, int num_sms, cudaStream_t stream) {
  const ChainLaunch launch = chain_launch(a, num_sms);
  if (launch.blocks == 0) return false;
  register_chain_trace();
  static const int forced_slices = env_int("PODKV_CUDA_CHAIN_SLICES");
  static const int prefetch_bytes = env_int("PODKV_CUDA_CHAIN_PREFETCH", 1024);

  ChainParams p{};
  p.stage[kO] = {a.wo, a.hidden, a.q_dim, ChainEpilogue::kResidual};
  p.stage[kGateUp] = {a.w_gate_up, 2 * a.inter, a.hidden, ChainEpilogue::kSwiglu};
  p.stage[kDown] = {a.w_down, a.hidden, a.inter, ChainEpilogue::kResidual};
  if (a.wqkv != nullptr) p.stage[kNextQkv] = {a.wqkv, a.qkv_out, a.hidden, ChainEpilogue::kBias};
  if (launch.rope) {
    p.rope = *a.rope;
    p.stage[kNextQkv].epilogue = ChainEpilogue::kRope;
    p.stage[kNextQkv].rope_half = a.rope->step.head_dim / 2;
    p.stage[kNextQkv].rope_interleaved = a.rope->interleaved;
  }
  for (ChainStage& s : p.stage)
    if (s.w != nullptr) plan_chain_stage(s, launch.blocks, launch.warps, forced_slices);
  p.attn = a.attn, p.x = a.x, p.h = a.h, p.qkv = a.qkv;
  p.mlp_norm = a.mlp_norm, p.next_norm = a.next_norm, p.bias = a.bqkv;
  p.eps = a.eps, p.hidden = a.hidden, p.barrier = a.barrier;
  p.prefetch_bytes = prefetch_bytes;
  static const bool one_word_barrier = env_int("PODKV_CUDA_CHAIN_BARRIER", 1) != 0;
  p.one_word_barrier = one_word_barrier;
  static const bool dynamic_tasks = env_int("PODKV_CUDA_CHAIN_DYNAMIC", 1) != 0;
  p.dynamic_tasks = dynamic_tasks;

  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(launch.blocks));
  config.blockDim = dim3(32 * launch.warps);
  config.dynamicSmemBytes = launch.smem;
  config.stream = stream;
  cudaLaunchAttribute attributes[2]{};
  unsigned count = 0;
  // PODKV_CUDA_CHAIN_COOPERATIVE=0: a plain launch of the same grid, resident all at once by its size
  // on a device nothing else uses (no guarantee: for the case where a cooperative node cannot be
  // captured in a step graph).
  static const bool plain = env_int("PODKV_CUDA_CHAIN_COOPERATIVE", 1) == 0;
  if (!plain) {
    attributes[count].id = cudaLaunchAttributeCooperative;
    attributes[count++].val.cooperative = 1;
  }
  // A programmatic dependent of the kernel before (pdl.cuh; PODKV_CUDA_CHAIN_PDL=0: not): the grid
  // starts while the merge runs (it triggers at its start), asks the o projection's first weights into
  // L2 and waits. Session 43 on two H100s, batch 1: 4K 162.56 / 162.28 / 162.68 tok/s against 161.96 /
  // 161.75 / 162.08 (1.004x), 32K 132.27 / 132.73 against 131.62 / 131.99 (1.005x), interleaved.
  static const bool dependent = env_int("PODKV_CUDA_CHAIN_PDL", 1) != 0 && pdl_enabled(PdlUse::kDecode);
  if (dependent) {
    attributes[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[count++].val.programmaticStreamSerializationAllowed = 1;
  }
  config.attrs = attributes;
  config.numAttrs = count;
  const cudaError_t e = cudaLaunchKernelEx(&config, chain_kernel(launch.warps, launch.rope), p);
  if (e == cudaErrorCooperativeLaunchTooLarge || e == cudaErrorLaunchOutOfResources ||
      e == cudaErrorInvalidConfiguration) {
    // A grid the device will not hold at once after all (fewer multiprocessors free than it has: MPS,
    // green contexts): clear the error, and the per-launch kernels take this size from now on.
    (void)cudaGetLastError();
    decline_from_now_on(launch.warps, launch.smem, launch.rope);
    return false;
  }
  check_cuda(e, "decode_chain_kernel (cooperative launch)");
  return true;
}

}  // namespace podkv::cuda
