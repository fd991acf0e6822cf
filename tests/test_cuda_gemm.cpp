// cuda::GemmLt (the prompt path's bf16 GEMMs through cuBLASLt, the algorithm of large shapes chosen
// by timing) against a double-precision reference of the same bf16 inputs, on the GPU: float32 and
// bf16 outputs, beta 0 and 1 (the residual add), odd sizes, outputs that are not 16-byte aligned
// (cuBLASLt may propose no algorithm for them: GemmLt then declines, for cublasGemmEx to run),
// timed and untimed choices, a second call of a shape (its stored plan: the same bits), a row count
// that takes another's timed choice (one power-of-two bucket), and a shape first met inside a CUDA
// graph capture (untimed, and right when the graph runs).
// Skips when built without CUDA or when no GPU is visible (CI).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda_backend.h"

#if defined(PODKV_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"
#include "cuda/gemm_lt.h"
#endif

namespace podkv {
namespace {

#if defined(PODKV_HAVE_CUDA)
uint16_t to_bf16(float x) {  // round to nearest even (finite inputs)
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

struct Case {
  int m, n, k;
  bool bf16_out;
  float beta;
  int y_offset;  // floats (or bf16 values) into the output allocation: 1 makes it 4- (2-) byte aligned
};

// Device copies of one case's random inputs, and its double-precision reference.
struct Problem {
  Case c;
  std::vector<uint16_t> w, a;
  std::vector<float> y0;
  void *d_w = nullptr, *d_a = nullptr;
  uint8_t* d_y = nullptr;  // the allocation; the output starts y_offset elements in

  Problem(const Case& c_, std::mt19937_64& rng) : c(c_) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    // W [k, m] column-major (row j of the weight matrix holds its k inputs), a [k, n], y [m, n].
    w.resize(static_cast<size_t>(c.k) * c.m), a.resize(static_cast<size_t>(c.k) * c.n);
    for (uint16_t& x : w) x = to_bf16(u(rng));
    for (uint16_t& x : a) x = to_bf16(u(rng));
    y0.resize(static_cast<size_t>(c.m) * c.n);
    for (float& x : y0) x = 4.0f * u(rng);
    d_w = cuda::device_alloc(w.size() * 2, "w");
    d_a = cuda::device_alloc(a.size() * 2, "a");
    d_y = static_cast<uint8_t*>(cuda::device_alloc((y0.size() + c.y_offset) * elem(), "y"));
    PODKV_CUDA_CHECK(cudaMemcpy(d_w, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
    PODKV_CUDA_CHECK(cudaMemcpy(d_a, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
    reset_y();
  }
  Problem(const Problem&) = delete;
  Problem& operator=(const Problem&) = delete;
  ~Problem() {
    cudaFree(d_w);
    cudaFree(d_a);
    cudaFree(d_y);
  }
  size_t elem() const { return c.bf16_out ? 2 : 4; }
  void* y() const { return d_y + c.y_offset * elem(); }
  cudaDataType_t type() const { return c.bf16_out ? CUDA_R_16BF : CUDA_R_32F; }
  void reset_y() const {
    if (!c.bf16_out) PODKV_CUDA_CHECK(cudaMemcpy(y(), y0.data(), y0.size() * 4, cudaMemcpyHostToDevice));
  }
  bool run(cuda::GemmLt& gemm) const { return gemm.run(d_w, d_a, c.m, c.n, c.k, y(), type(), c.beta); }
  std::vector<float> result() const {
    std::vector<float> got(y0.size());
    if (c.bf16_out) {
      std::vector<uint16_t> h(y0.size());
      PODKV_CUDA_CHECK(cudaMemcpy(h.data(), y(), h.size() * 2, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < h.size(); ++i) got[i] = from_bf16(h[i]);
    } else {
      PODKV_CUDA_CHECK(cudaMemcpy(got.data(), y(), got.size() * 4, cudaMemcpyDeviceToHost));
    }
    return got;
  }
  std::string name() const {
    return std::to_string(c.m) + " x " + std::to_string(c.n) + " x " + std::to_string(c.k) +
           (c.bf16_out ? " bf16" : " f32") + ", beta " + std::to_string(c.beta) + ", offset " +
           std::to_string(c.y_offset);
  }
  // The count of outputs off the reference (the first few reported).
  int check(const std::vector<float>& got, const std::string& what) const {
    int bad = 0;
    for (int col = 0; col < c.n; ++col)
      for (int row = 0; row < c.m; ++row) {
        double want = 0, magnitude = 0;
        for (int t = 0; t < c.k; ++t) {
          const double p = static_cast<double>(from_bf16(w[static_cast<size_t>(row) * c.k + t])) *
                           from_bf16(a[static_cast<size_t>(col) * c.k + t]);
          want += p, magnitude += std::fabs(p);
        }
        const size_t i = static_cast<size_t>(col) * c.m + row;
        want += c.beta * y0[i], magnitude += std::fabs(c.beta * y0[i]);
        // float32 accumulation: well within 1e-5 of the terms' magnitude; a bf16 output adds its
        // rounding (up to half a step: 2^-8 relative).
        const double tol = 1e-5 * magnitude + (c.bf16_out ? std::ldexp(std::fabs(want), -8) : 0.0);
        if (std::fabs(got[i] - want) > tol && bad++ < 3)
          ADD_FAILURE() << what << ": y[" << row << ", " << col << "] = " << got[i] << ", want " << want;
      }
    return bad;
  }
};

struct Device {
  cudaStream_t stream = nullptr;
  size_t workspace_bytes = size_t{32} << 20;
  void* workspace = nullptr;
  Device() {
    PODKV_CUDA_CHECK(cudaStreamCreate(&stream));
    workspace = cuda::device_alloc(workspace_bytes, "workspace");
  }
  ~Device() {
    cudaFree(workspace);
    cudaStreamDestroy(stream);
  }
};

TEST(CudaGemm, GemmLtMatchesADoubleReference) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  Device dev;
  std::mt19937_64 rng(5);
  // The last two share the power-of-two bucket of 1024 rows: the first is timed, the second takes its
  // choice (checked against its own shape).
  const Case cases[] = {{256, 100, 320, false, 0.0f, 0}, {130, 17, 72, false, 1.0f, 0}, {64, 9, 4096, false, 1.0f, 1},
                        {512, 64, 256, true, 0.0f, 0},   {100, 33, 200, true, 0.0f, 1}, {512, 1024, 256, false, 1.0f, 0},
                        {512, 1000, 256, false, 1.0f, 0}};
  for (bool tune : {true, false}) {
    cuda::GemmLt gemm(dev.stream, dev.workspace, dev.workspace_bytes, tune);
    for (const Case& c : cases) {
      const Problem p(c, rng);
      const std::string what = p.name() + (tune ? ", timed" : ", untimed");
      // An output of odd alignment may have no cuBLASLt algorithm: then GemmLt declines (the backend
      // takes cublasGemmEx) and queues nothing. Whole allocations (256-byte aligned) always run.
      if (!p.run(gemm)) {
        EXPECT_NE(c.y_offset, 0) << what << ": declined";
        continue;
      }
      PODKV_CUDA_CHECK(cudaStreamSynchronize(dev.stream));
      const std::vector<float> first = p.result();
      EXPECT_EQ(p.check(first, what), 0) << what;
      // Again, from the same inputs: the stored plan, the same bits, no more timing.
      const int timed = gemm.timed_shapes();
      p.reset_y();
      EXPECT_TRUE(p.run(gemm)) << what << ", second call";
      PODKV_CUDA_CHECK(cudaStreamSynchronize(dev.stream));
      EXPECT_EQ(p.result(), first) << what << ", second call";
      EXPECT_EQ(gemm.timed_shapes(), timed) << what << ", second call";
    }
    // Untimed: nothing timed. Timed: one bucket (512 x 1024 x 256; its heuristic offers several
    // candidates), which 512 x 1000 x 256 reuses.
    EXPECT_EQ(gemm.timed_shapes(), tune ? 1 : 0);
  }
}

TEST(CudaGemm, GemmLtInsideAGraphCapture) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  Device dev;
  std::mt19937_64 rng(9);
  const Problem p(Case{512, 1024, 256, false, 1.0f, 0}, rng);
  cuda::GemmLt gemm(dev.stream, dev.workspace, dev.workspace_bytes, true);
  PODKV_CUDA_CHECK(cudaStreamBeginCapture(dev.stream, cudaStreamCaptureModeThreadLocal));
  try {
    EXPECT_TRUE(p.run(gemm));  // first met here: the heuristic's first candidate, untimed
  } catch (...) {
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(dev.stream, &g);
    if (g != nullptr) cudaGraphDestroy(g);
    throw;
  }
  cudaGraph_t graph = nullptr;
  PODKV_CUDA_CHECK(cudaStreamEndCapture(dev.stream, &graph));
  cudaGraphExec_t exec = nullptr;
  PODKV_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  PODKV_CUDA_CHECK(cudaGraphLaunch(exec, dev.stream));
  PODKV_CUDA_CHECK(cudaStreamSynchronize(dev.stream));
  EXPECT_EQ(p.check(p.result(), "captured"), 0);
  EXPECT_EQ(gemm.timed_shapes(), 0);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}
#endif

}  // namespace
}  // namespace podkv
