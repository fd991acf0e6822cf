// Hopper's mbarriers (sm_90): 64-bit counters in shared memory that complete a phase when the
// expected number of arrivals has come in; a waiter names the phase by its parity (phases 0, 1, 2,
// ... have parities 0, 1, 0, ...). They let warps hand tiles to each other without a block barrier.
//  - mbarrier_init by one thread, then mbarrier_init_fence and a __syncthreads before any use.
//  - cp_async_arrive: an arrival made when this thread's earlier cp.async copies have landed
//    (.noinc: the count given to mbarrier_init includes these arrivals).
//  - mbarrier_arrive_expect_tx and bulk_copy_to_shared: an arrival whose phase also waits for the
//    bytes of bulk copies (sm_90 PTX, no 'a' features: the decode kernel uses them too).
#pragma once

#include <cstdint>

namespace podkv::cuda::sm90a {

__device__ __forceinline__ uint32_t smem_address(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarrier_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }

// The barrier by its shared-memory address (smem_address): a ring of barriers is then the first
// one's address plus 8 bytes a stage, a 32-bit add (ptxas still takes the window's base from
// SR_CgaCtaId in the loop, on the uniform datapath).
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) { mbarrier_arrive(smem_address(bar)); }

__device__ __forceinline__ void cp_async_arrive(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_address(bar)) : "memory");
}

// An arrival that also expects `bytes` more of asynchronous copies (complete_tx) in this phase.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_address(bar)), "r"(bytes)
               : "memory");
}

// One bulk copy of `bytes` (a multiple of 16; both addresses 16-byte aligned) from global to shared
// memory by the copy engine of the multiprocessor, counted on `bar`'s transaction bytes when it lands.
__device__ __forceinline__ void bulk_copy_to_shared(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_address(dst)),
               "l"(src), "r"(bytes), "r"(smem_address(bar))
               : "memory");
}

// Orders this thread's generic-proxy accesses of shared memory (plain loads and stores, cp.async)
// before later async-proxy ones (wgmma reads, bulk copies' writes).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (done == 0);
}
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) { mbarrier_wait(smem_address(bar), parity); }

// Named barrier `id` (0 is __syncthreads'): waits until `threads` threads have arrived; lets a
// warpgroup meet by itself.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace podkv::cuda::sm90a
