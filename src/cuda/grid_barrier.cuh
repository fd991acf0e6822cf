// The decode chain's grid barrier (decode_chain.cu): every block of a cooperative grid (all resident)
// waits until all have arrived, and the writes before it are visible to the reads after it. `barrier`
// is kDecodeChainBarrierWords of device memory (kernels.h), zero before its first use and kept across
// launches.
#pragma once

#include "cuda/kernels.h"

namespace podkv::cuda {

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Two protocols (ChainParams::one_word_barrier in decode_chain.cu):
//  - one word (the default): a 64-bit word at barrier + kWord64 (a cache line of its own) holds the
//    generation (high 32 bits) and the arrivals (low 32). A block's arrival is one atomic add that
//    returns the generation it waits past; the last block's second add moves the generation on and
//    takes the arrivals back to zero at once, so the others are released one round trip after the
//    last arrival. The word is kept across launches (its arrivals are zero between barriers, so grids
//    of different sizes may share it).
//  - two counters (session 26's): barrier[0] counts the arrivals and is back to zero when the last
//    block has come; barrier[kGeneration] moves on by one per barrier (a block reads it before it
//    arrives). The last block's release waits on three round trips (the read, its arrival, the reset).
// One fence, by the arriving thread after the block's barrier: cumulative, it orders the block's writes
// before the arrival (as cooperative groups' grid sync does). Session 43 (an H100, batch 1 at 4K, two
// interleaved passes): one word 157.07 / 157.10 tok/s against 155.97 / 155.88 with the two counters
// (1.007x).
// The barrier's words lie in the first kGridBarrierWords of `barrier` (decode_chain.cu keeps its task
// counters past them): the arrivals at word 0, the one-word protocol's word at kWord64, the generation
// at kGeneration, each on a cache line of its own. Fixed offsets, not fractions of the allocation:
// session 48's larger allocation moved the generation onto a task counter and the two-counter barrier
// never released.
constexpr int kGridBarrierWords = 64;
constexpr int kWord64 = 16;      // in unsigned words: bytes 64 .. 71 (8-byte aligned)
constexpr int kGeneration = 32;  // bytes 128 .. 131
static_assert(kDecodeChainBarrierWords >= kGridBarrierWords, "the barrier's three cache lines of 64 bytes");

__device__ __forceinline__ unsigned long long load_acquire64(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

// `meanwhile` runs on every thread of the block after its arrival, before it waits: work that reads
// nothing the other blocks write before the barrier is done while the last blocks arrive, not after.
template <typename F>
__device__ __forceinline__ void grid_barrier(unsigned* barrier, bool one_word, F meanwhile) {
  __syncthreads();
  if (one_word) {
    auto* word = reinterpret_cast<unsigned long long*>(barrier + kWord64);
    unsigned generation = 0;
    bool last = false;
    if (threadIdx.x == 0) {
      __threadfence();
      // acq_rel: the last block reads what the others wrote before their arrivals once it is past.
      unsigned long long old;
      asm volatile("atom.acq_rel.gpu.global.add.u64 %0, [%1], 1;" : "=l"(old) : "l"(word) : "memory");
      generation = static_cast<unsigned>(old >> 32);
      last = static_cast<unsigned>(old) == gridDim.x - 1;
      // The generation + 1 and the arrivals - gridDim.x, in one add; release: after this block's fence.
      if (last) asm volatile("red.release.gpu.global.add.u64 [%0], %1;" ::"l"(word), "l"((1ull << 32) - gridDim.x) : "memory");
    }
    meanwhile();
    if (threadIdx.x == 0 && !last) {
      while (static_cast<unsigned>(load_acquire64(word) >> 32) == generation) {
      }
    }
    __syncthreads();
    return;
  }
  unsigned generation = 0;
  bool last = false;
  if (threadIdx.x == 0) {
    generation = load_acquire(barrier + kGeneration);
    __threadfence();
    last = atomicAdd(barrier, 1u) == gridDim.x - 1;
    if (last) {
      atomicExch(barrier, 0u);
      __threadfence();
      atomicAdd(barrier + kGeneration, 1u);
    }
  }
  meanwhile();
  if (threadIdx.x == 0) {
    if (!last) {
      while (load_acquire(barrier + kGeneration) == generation) {
      }
    }
    __threadfence();
  }
  __syncthreads();
}

__device__ __forceinline__ void grid_barrier(unsigned* barrier, bool one_word) {
  grid_barrier(barrier, one_word, [] {});
}

}  // namespace podkv::cuda
