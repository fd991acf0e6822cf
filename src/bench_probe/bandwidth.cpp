// Copy and read bandwidth of main memory with the threads the kernels use.
// Each thread works on its own contiguous slice, which it also first-touches, so
// on NUMA machines its pages are local (as the GEMV's row blocks are, once warm).
#include "bench_probe/bandwidth.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>


#include "ops/matmul.h"
#include "util/simd.h"
#include "util/error.h"

namespace podkv {
namespace {

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], FreeDeleter>;

constexpr size_t kAlign = 64;

Buffer alloc_floats(size_t n) {
  void* p = std::aligned_alloc(kAlign, n * sizeof(float));
  check(p != nullptr, "bandwidth: cannot allocate " + std::to_string(n * sizeof(float)) + " bytes");
  return Buffer(static_cast<float*>(p));
}

// Slice [begin, end) of n floats for thread t of nt, in whole 64-byte lines.
void slice(size_t n, int t, int nt, size_t& begin, size_t& end) {
  const size_t lines = n / 16;
  begin = lines * t / nt * 16;
  end = lines * (t + 1) / nt * 16;
}

void copy_slice(const float* src, float* dst, size_t n) {
  size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, _mm512_load_ps(src + i));
  _mm_sfence();
#elif defined(__AVX__)
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_load_ps(src + i));
  _mm_sfence();
#endif
  std::memcpy(dst + i, src + i, (n - i) * sizeof(float));
}

float sum_slice(const float* p, size_t n) {
  // Several independent vector sums so the adds do not serialise on their latency
  // (one chain of adds would cap a core far below its load bandwidth).
  size_t i = 0;
  float total = 0;
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  total = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#else
  float s[32] = {};
  for (; i + 32 <= n; i += 32)
    for (int k = 0; k < 32; ++k) s[k] += p[i + k];
  for (int k = 0; k < 32; ++k) total += s[k];
#endif
  for (; i < n; ++i) total += p[i];
  return total;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

double measure_copy_bandwidth_gbs(size_t bytes, int repeats) {
  check(bytes >= 4096 && repeats >= 1, "measure_copy_bandwidth_gbs: need bytes >= 4096 and repeats >= 1");
  const size_t n = bytes / sizeof(float) / 16 * 16;
  Buffer src = alloc_floats(n), dst = alloc_floats(n);
  const int nt = num_threads();
#pragma omp parallel num_threads(nt)
  {
    size_t b, e;
    slice(n, omp_get_thread_num(), omp_get_num_threads(), b, e);
    for (size_t i = b; i < e; ++i) src[i] = static_cast<float>(i & 1023);
    std::memset(dst.get() + b, 0, (e - b) * sizeof(float));
  }
  double best = 0;
  for (int rep = 0; rep <= repeats; ++rep) {  // rep 0 warms up (page tables, TLB)
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(nt)
    {
      size_t b, e;
      slice(n, omp_get_thread_num(), omp_get_num_threads(), b, e);
      copy_slice(src.get() + b, dst.get() + b, e - b);
    }
    const double s = seconds_since(t0);
    if (rep > 0) best = std::max(best, 2.0 * n * sizeof(float) / s / 1e9);
  }
  return best;
}

double measure_read_bandwidth_gbs(size_t bytes, int repeats) {
  check(bytes >= 4096 && repeats >= 1, "measure_read_bandwidth_gbs: need bytes >= 4096 and repeats >= 1");
  const size_t n = bytes / sizeof(float) / 16 * 16;
  Buffer buf = alloc_floats(n);
  const int nt = num_threads();
#pragma omp parallel num_threads(nt)
  {
    size_t b, e;
    slice(n, omp_get_thread_num(), omp_get_num_threads(), b, e);
    for (size_t i = b; i < e; ++i) buf[i] = static_cast<float>(i & 7);
  }
  double best = 0;
  volatile float sink = 0;  // keeps the sums from being optimised away
  for (int rep = 0; rep <= repeats; ++rep) {
    float total = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(nt) reduction(+ : total)
    {
      size_t b, e;
      slice(n, omp_get_thread_num(), omp_get_num_threads(), b, e);
      total += sum_slice(buf.get() + b, e - b);
    }
    const double s = seconds_since(t0);
    sink = sink + total;
    if (rep > 0) best = std::max(best, static_cast<double>(n) * sizeof(float) / s / 1e9);
  }
  return best;
}

}  // namespace podkv
