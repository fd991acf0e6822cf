// The host's bookkeeping of a 32K prompt in 4096-token chunks (reserve, view build, commit) for the
// Llama-3-8B KV shape (32 layers, 8 KV heads, head_dim 128, bf16 entries, 64-token pages): the time
// the GPU would wait for between two chunks, since CudaBackend::forward synchronises after each.
// Session 25 (no GPU), from the repository root after a build in build/ (or build-cuda/):
//   g++ -std=c++20 -O2 -Isrc docs/gpu-bench/kernel-tuning/host_chunk_bookkeeping.cpp \
//     build/libpodkv_kv.a build/libpodkv_util.a -fopenmp -o /tmp/hb && /tmp/hb
#include <chrono>
#include <cstdio>
#include <vector>

#include "kv/kv_cache.h"
#include "kv/kv_layout.h"
#include "kv/kv_view_builder.h"

using namespace podkv;

int main() {
  KvCache cache(KvLayout::dense(32, 8, 128), size_t{8} << 30, 64, KvDType::BF16);
  std::vector<uint8_t> pool(1);  // the view only records the base address
  KvViewBuilder views;
  for (int rep = 0; rep < 3; ++rep) {
    const int seq = cache.add_sequence();
    double total = 0, build = 0;
    for (int64_t done = 0; done < 32768; done += 4096) {
      const auto t0 = std::chrono::steady_clock::now();
      cache.reserve(seq, done + 4096);
      const auto t1 = std::chrono::steady_clock::now();
      views.build(cache, pool.data(), {seq}, {done + 4096});
      const auto t2 = std::chrono::steady_clock::now();
      cache.commit(seq, done + 4096);
      const auto t3 = std::chrono::steady_clock::now();
      total += std::chrono::duration<double, std::milli>(t3 - t0).count();
      build += std::chrono::duration<double, std::milli>(t2 - t1).count();
    }
    std::printf("run %d: 8 chunks' bookkeeping %.2f ms (view builds %.2f ms)\n", rep, total, build);
    cache.remove_sequence(seq);
  }
}
