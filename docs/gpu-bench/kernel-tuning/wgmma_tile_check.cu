// Micro test of the wgmma tiles as attention_prefill_wgmma.cu uses them: S = Q Kᵀ (K-major) and O = P V (MN-major).
#include <cuda_bf16.h>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cmath>
#include "cuda/sm90a/wgmma.cuh"
#include "cuda/warp_attention.cuh"
using namespace podkv::cuda;
using namespace podkv::cuda::sm90a;

template <int D> __device__ int offset(int r, int ch) { return (ch / 8) * 8192 + r * 128 + (((ch % 8) ^ (r % 8)) << 4); }

// q [64][D] bf16 bits, k [64][D], v [64][D], p [64][64]; s_out [64][64], o_out [64][D]
template <int D>
__global__ void micro(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* p, float* s_out, float* o_out) {
  extern __shared__ uint8_t raw[];
  uint8_t* smem = raw + ((1024 - (static_cast<uint32_t>(__cvta_generic_to_shared(raw)) & 1023)) & 1023);
  uint8_t* K = smem; uint8_t* V = smem + 64 * D * 2;
  for (int x = threadIdx.x; x < 64 * (D / 8); x += 128) {
    int r = x / (D / 8), ch = x % (D / 8);
    *reinterpret_cast<uint4*>(K + offset<D>(r, ch)) = reinterpret_cast<const uint4*>(k + r * D)[ch];
    *reinterpret_cast<uint4*>(V + offset<D>(r, ch)) = reinterpret_cast<const uint4*>(v + r * D)[ch];
  }
  fence_proxy_async();
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int r0 = 16 * warp + g, r1 = r0 + 8;
  auto pair = [](const uint16_t* row, int e) { return uint32_t(row[e]) | (uint32_t(row[e + 1]) << 16); };
  uint32_t qa[D / 16][4];
  for (int s = 0; s < D / 16; ++s) {
    qa[s][0] = pair(q + r0 * D, 16 * s + 2 * c); qa[s][1] = pair(q + r1 * D, 16 * s + 2 * c);
    qa[s][2] = pair(q + r0 * D, 16 * s + 2 * c + 8); qa[s][3] = pair(q + r1 * D, 16 * s + 2 * c + 8);
  }
  float x[8][4];
  const uint64_t kd = smem_descriptor(K, 16, 1024);
  wgmma_fence();
#pragma unroll
  for (int s = 0; s < D / 16; ++s) wgmma_m64n64k16<0>(x, qa[s], offset_descriptor(kd, (s / 4) * 8192 + (s % 4) * 32), s > 0);
  wgmma_commit(); wgmma_wait<0>(); fence_operands(x);
  for (int nb = 0; nb < 8; ++nb) for (int e = 0; e < 4; ++e) s_out[(e < 2 ? r0 : r1) * 64 + 8 * nb + 2 * c + e % 2] = x[nb][e];
  uint32_t pa[4][4];
  for (int u = 0; u < 4; ++u) {
    pa[u][0] = pair(p + r0 * 64, 16 * u + 2 * c); pa[u][1] = pair(p + r1 * 64, 16 * u + 2 * c);
    pa[u][2] = pair(p + r0 * 64, 16 * u + 2 * c + 8); pa[u][3] = pair(p + r1 * 64, 16 * u + 2 * c + 8);
  }
  float o[D / 8][4];
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  const uint64_t vd = smem_descriptor(V, LBO_V, SBO_V);
  fence_operands(o);
  wgmma_fence();
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    if constexpr (D == 128) wgmma_m64n128k16<1>(o, pa[u], offset_descriptor(vd, u * 2048), true);
    else wgmma_m64n64k16<1>(o, pa[u], offset_descriptor(vd, u * 2048), true);
  }
  wgmma_commit(); wgmma_wait<0>(); fence_operands(o);
  for (int nb = 0; nb < D / 8; ++nb) for (int e = 0; e < 4; ++e) o_out[(e < 2 ? r0 : r1) * D + 8 * nb + 2 * c + e % 2] = o[nb][e];
}

static uint16_t bf(float f) { uint32_t u; memcpy(&u, &f, 4); return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16); }
static float fb(uint16_t h) { uint32_t u = uint32_t(h) << 16; float f; memcpy(&f, &u, 4); return f; }

template <int D> void run() {
  std::vector<uint16_t> q(64 * D), k(64 * D), v(64 * D), p(64 * 64);
  for (auto* vec : {&q, &k, &v, &p}) for (auto& x : *vec) x = bf(float(rand()) / RAND_MAX - 0.5f);
  uint16_t *dq, *dk, *dv, *dp; float *ds, *dout;
  cudaMalloc(&dq, q.size() * 2); cudaMalloc(&dk, k.size() * 2); cudaMalloc(&dv, v.size() * 2); cudaMalloc(&dp, p.size() * 2);
  cudaMalloc(&ds, 64 * 64 * 4); cudaMalloc(&dout, 64 * D * 4);
  cudaMemcpy(dq, q.data(), q.size() * 2, cudaMemcpyHostToDevice); cudaMemcpy(dk, k.data(), k.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dv, v.data(), v.size() * 2, cudaMemcpyHostToDevice); cudaMemcpy(dp, p.data(), p.size() * 2, cudaMemcpyHostToDevice);
  cudaFuncSetAttribute(micro<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * D * 4 + 1024);
  micro<D><<<1, 128, 64 * D * 4 + 1024>>>(dq, dk, dv, dp, ds, dout);
  cudaError_t err = cudaDeviceSynchronize();
  std::vector<float> s(64 * 64), o(64 * D);
  cudaMemcpy(s.data(), ds, s.size() * 4, cudaMemcpyDeviceToHost); cudaMemcpy(o.data(), dout, o.size() * 4, cudaMemcpyDeviceToHost);
  double es = 0, eo = 0;
  for (int i = 0; i < 64; ++i) for (int j = 0; j < 64; ++j) { double r = 0; for (int d = 0; d < D; ++d) r += fb(q[i * D + d]) * fb(k[j * D + d]); es = fmax(es, fabs(r - s[i * 64 + j])); }
  for (int i = 0; i < 64; ++i) for (int d = 0; d < D; ++d) { double r = 0; for (int j = 0; j < 64; ++j) r += fb(p[i * 64 + j]) * fb(v[j * D + d]); eo = fmax(eo, fabs(r - o[i * D + d])); }
  printf("D=%d LBO=%d SBO=%d: %s, S max abs err %.3g, O max abs err %.3g\n", D, LBO_V, SBO_V, cudaGetErrorString(err), es, eo);
}
int main() { run<64>(); run<128>(); }
