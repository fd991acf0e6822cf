// The split-KV decode attention kernel on the CUDA cores (decode_kernel), for what the tensor-core
// kernel does not take (f32, f16 and q8_0 entries, selection stores, head_dim not a multiple of 32;
// attention_decode.cu tells the split and the partials): one block of 4 warps per (row, KV head,
// group tile of up to 8 query heads, chunk), taking 32-key tiles in turn:
//   scores: lane j reads key j of the tile whole (16-byte loads where the entry type allows) and
//           dots it with each head's query (shared memory);
//   softmax: per head a running max, and the proximal and distant sums apart;
//   values:  lane l holds output elements l, l + 32, ... of every head;
// the block's warps merged in shared memory into the chunk's partial.
#include <cmath>

#include "cuda/attention_decode.cuh"
#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"

namespace podkv::cuda {

namespace {

using namespace decode;

constexpr int kGroupTile = 8;  // query heads per block

// Elements [8c, 8c + 8) of entry e.
template <KvDType T>
__device__ __forceinline__ void load8(const uint8_t* e, int c, float (&x)[8]) {
  if constexpr (T == KvDType::F32) {
    const float4* p = reinterpret_cast<const float4*>(e) + 2 * c;
    const float4 a = p[0], b = p[1];
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  } else if constexpr (T == KvDType::F16) {
    const uint4 p = reinterpret_cast<const uint4*>(e)[c];
    const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      x[2 * i] = f.x, x[2 * i + 1] = f.y;
    }
  } else if constexpr (T == KvDType::BF16) {
    const uint4 p = reinterpret_cast<const uint4*>(e)[c];
    const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) x[2 * i] = __uint_as_float(w[i] << 16), x[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  } else {
    // Blocks of 32 values at 34-byte strides (the last one may be shorter): an f16 scale, then int8s.
    const int first = 8 * c;
    const uint8_t* block = e + (first / 32) * 34;
    const float scale = f16_bytes_to_f32(block);
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = scale * static_cast<float>(static_cast<int8_t>(block[2 + first % 32 + i]));
  }
}

// Output elements of a lane: with d % 32 == 0 the contiguous run [lane * E, lane * E + E), E = d / 32
// (bf16 and f16 rows of 128 read 8 bytes per lane in one load); otherwise lane, lane + 32, ...
__device__ __forceinline__ int lane_element(int lane, int c, int d) {
  return d % 32 == 0 ? lane * (d / 32) + c : lane + 32 * c;
}

template <KvDType T>
__device__ __forceinline__ void load_lane(const uint8_t* e, int lane, int d, float (&x)[kLaneElems]) {
  if (e == nullptr) {
#pragma unroll
    for (int c = 0; c < kLaneElems; ++c) x[c] = 0.0f;
    return;
  }
  if (d == 128 && (T == KvDType::BF16 || T == KvDType::F16)) {
    const uint2 p = reinterpret_cast<const uint2*>(e)[lane];
    if constexpr (T == KvDType::BF16) {
      x[0] = __uint_as_float(p.x << 16), x[1] = __uint_as_float(p.x & 0xffff0000u);
      x[2] = __uint_as_float(p.y << 16), x[3] = __uint_as_float(p.y & 0xffff0000u);
    } else {
      const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&p.x));
      const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&p.y));
      x[0] = a.x, x[1] = a.y, x[2] = b.x, x[3] = b.y;
    }
    return;
  }
  if (d == 128 && T == KvDType::F32) {
    const float4 p = reinterpret_cast<const float4*>(e)[lane];
    x[0] = p.x, x[1] = p.y, x[2] = p.z, x[3] = p.w;
    return;
  }
  if (d % 32 != 0) {
    decode_entry<T>(e, lane, d, x);
    return;
  }
#pragma unroll
  for (int c = 0; c < kLaneElems; ++c) {
    x[c] = 0.0f;
    if (c >= d / 32) continue;
    const int i = lane_element(lane, c, d);
    if constexpr (T == KvDType::F32) x[c] = reinterpret_cast<const float*>(e)[i];
    else if constexpr (T == KvDType::F16) x[c] = __half2float(reinterpret_cast<const __half*>(e)[i]);
    else if constexpr (T == KvDType::BF16) x[c] = bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(e)[i]);
    else x[c] = f16_bytes_to_f32(e + (i / 32) * 34) * static_cast<float>(static_cast<int8_t>(e[(i / 32) * 34 + 2 + i % 32]));
  }
}

// Shared rows of a key or value tile: the entry rounded up to 16 bytes plus 16, so that lanes copying
// their rows 16 bytes at a time hit different banks.
__host__ __device__ inline int64_t value_row_stride(int64_t entry_bytes) { return (entry_bytes + 15) / 16 * 16 + 16; }

// Copies one entry (bytes) in the widest units its size and address allow.
__device__ __forceinline__ void copy_row(uint8_t* dst, const uint8_t* src, int bytes) {
  if (bytes % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
#pragma unroll 16
    for (int i = 0; i < bytes / 16; ++i) reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
  } else if (bytes % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 8 == 0) {
#pragma unroll 4
    for (int i = 0; i < bytes / 8; ++i) reinterpret_cast<uint2*>(dst)[i] = reinterpret_cast<const uint2*>(src)[i];
  } else {
    for (int i = 0; i < bytes; ++i) dst[i] = src[i];
  }
}

template <KvDType T>
__global__ void __launch_bounds__(kWarps * 32)
    decode_kernel(DeviceStep s, AttentionLaunch a, const float* q, int splits, float* partials) {
  const int64_t slot = blockIdx.x, row = s.decode_rows != nullptr ? s.decode_rows[slot] : slot;
  const int H = a.num_heads, Hkv = s.num_kv_heads, groups = H / Hkv, d = s.head_dim, layer = a.layer;
  const int tiles_per_head = (groups + kGroupTile - 1) / kGroupTile;
  const int h = blockIdx.y / tiles_per_head;
  const int head0 = h * groups + (blockIdx.y % tiles_per_head) * kGroupTile;
  const int G = min(kGroupTile, h * groups + groups - head0);
  const int split = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = s.row_entry[row];
  const int64_t pos = s.first_pos[b] + (row - s.row_begin[b]);

  const KvRule kr = s.key_rules[layer * Hkv + h];
  Span spans[kMaxSpans];
  bool distant = false;
  const int count = row_spans(s, layer, b, h, pos, spans, distant);
  const bool shared = kr.retention == kRetainWindow || kr.retention == kRetainNone;
  extern __shared__ __align__(16) uint8_t tiles_smem[];  // keys, then values: [kWarps * 32][v_stride] each
  const int64_t v_stride = value_row_stride(s.entry_bytes);
  uint8_t* k_tile = tiles_smem;
  uint8_t* v_tile = tiles_smem + static_cast<size_t>(kWarps) * 32 * v_stride;
  // Heads whose anchor's gate reached tau skip their distant keys.
  __shared__ bool skip_s[kGroupTile];
  __shared__ float q_s[kGroupTile][kMaxHeadDim];
  __shared__ float p_s[kWarps][kGroupTile][32];
  if (threadIdx.x < G) {
    const int i = head0 + threadIdx.x;
    const bool skip = distant && shared && kr.distant_source >= 0 && a.tau < 1.0f && a.all_gates != nullptr &&
                      a.all_gates[(kr.distant_source * s.rows + row) * H + i] >= a.tau;
    skip_s[threadIdx.x] = skip;
    if (skip && split == 0) atomicAdd(a.skipped, 1ULL);
  }
  for (int t = threadIdx.x; t < G * d; t += blockDim.x) q_s[t / d][t % d] = q[(row * H + head0 + t / d) * d + t % d];
  __syncthreads();

  // This chunk of the virtual key range, in 32-key tiles.
  int64_t total = 0;
  for (int n = 0; n < count; ++n) total += spans[n].end > spans[n].begin ? spans[n].end - spans[n].begin : 0;
  const int64_t chunk = ((total + splits - 1) / splits + 31) / 32 * 32;
  const int64_t v0 = split * chunk, v1 = min(total, v0 + chunk);

  float run_max[kGroupTile], sum_p[kGroupTile], sum_d[kGroupTile], acc[kGroupTile][kLaneElems];
#pragma unroll
  for (int g = 0; g < kGroupTile; ++g) {
    run_max[g] = -INFINITY, sum_p[g] = 0.0f, sum_d[g] = 0.0f;
#pragma unroll
    for (int c = 0; c < kLaneElems; ++c) acc[g][c] = 0.0f;
  }
  int64_t span_start = 0;  // virtual index of spans[n].begin
  for (int n = 0; n < count; ++n) {
    const Span& sp = spans[n];
    const int64_t len = sp.end > sp.begin ? sp.end - sp.begin : 0;
    const int64_t lo = max(v0, span_start), hi = min(v1, span_start + len);
    span_start += len;
    if (lo >= hi) continue;
    for (int64_t t0 = lo + 32 * warp; t0 < hi; t0 += 32 * kWarps) {
      const int64_t j = sp.begin + (t0 - (span_start - len)) + lane;  // this lane's key
      const bool valid = t0 + lane < hi;
      // The tile's key and value rows into this warp's shared rows: lane j copies row j (16-byte
      // loads issued together, where reading them key by key would wait on each in turn).
      const uint8_t* ke = valid ? entry_at(s, sp.keys, j) : nullptr;
      const uint8_t* ve = valid ? entry_at(s, sp.values, j) : nullptr;
      uint8_t* k_row = k_tile + (static_cast<size_t>(warp) * 32 + lane) * v_stride;
      if (ke != nullptr) copy_row(k_row, ke, static_cast<int>(s.entry_bytes));
      if (ve != nullptr) copy_row(v_tile + (static_cast<size_t>(warp) * 32 + lane) * v_stride, ve, static_cast<int>(s.entry_bytes));
      float score[kGroupTile];
#pragma unroll
      for (int g = 0; g < kGroupTile; ++g) score[g] = 0.0f;
      if (ke != nullptr) {
#pragma unroll 4
        for (int c = 0; c < d / 8; ++c) {
          float k8[8];
          load8<T>(k_row, c, k8);
#pragma unroll
          for (int g = 0; g < kGroupTile; ++g) {
            if (g >= G) break;
            const float* qg = &q_s[g][8 * c];
#pragma unroll
            for (int e = 0; e < 8; ++e) score[g] += qg[e] * k8[e];
          }
        }
      }
#pragma unroll
      for (int g = 0; g < kGroupTile; ++g) {
        if (g >= G) break;
        const bool masked = !valid || (sp.distant && skip_s[g]);
        const float x = masked ? -INFINITY : score[g] * a.scale;
        const float tile_max = warp_max(x);
        const float m = fmaxf(run_max[g], tile_max);
        const float p = m == -INFINITY ? 0.0f : expf(x - m);
        const float correction = run_max[g] == -INFINITY ? 0.0f : expf(run_max[g] - m);
        const float tile_sum = warp_sum(p);
        sum_p[g] *= correction, sum_d[g] *= correction;
        if (sp.distant) sum_d[g] += tile_sum;
        else sum_p[g] += tile_sum;
#pragma unroll
        for (int c = 0; c < kLaneElems; ++c) acc[g][c] *= correction;
        run_max[g] = m;
        p_s[warp][g][lane] = p;
      }
      __syncwarp();
      const int64_t tile_end = hi - t0 < 32 ? hi - t0 : 32;
      for (int jj = 0; jj < tile_end; ++jj) {
        float v[kLaneElems];
        load_lane<T>(v_tile + (static_cast<size_t>(warp) * 32 + jj) * v_stride, lane, d, v);
#pragma unroll
        for (int g = 0; g < kGroupTile; ++g) {
          if (g >= G) break;
          const float p = p_s[warp][g][jj];
#pragma unroll
          for (int c = 0; c < kLaneElems; ++c) acc[g][c] += p * v[c];
        }
      }
      __syncwarp();
    }
  }

  // Merge the warps: per head, max and sums in shared memory, then acc.
  __shared__ float w_max[kWarps][kGroupTile], w_sp[kWarps][kGroupTile], w_sd[kWarps][kGroupTile];
  __shared__ float w_acc[kWarps][kMaxHeadDim];
  if (lane == 0) {
    for (int g = 0; g < G; ++g) w_max[warp][g] = run_max[g], w_sp[warp][g] = sum_p[g], w_sd[warp][g] = sum_d[g];
  }
  for (int g = 0; g < G; ++g) {
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kLaneElems; ++c) {
      const int i = lane_element(lane, c, d);
      if (i < d && (d % 32 != 0 || c < d / 32)) w_acc[warp][i] = acc[g][c];
    }
    __syncthreads();
    float m = -INFINITY;
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, w_max[w][g]);
    float* out = partial_at(partials, slot, H, head0 + g, splits, split, d);
    for (int t = threadIdx.x; t < partial_stride(d); t += blockDim.x) {
      if (t == 3) continue;  // unused
      float x = 0.0f;
      for (int w = 0; w < kWarps; ++w) {
        const float weight = w_max[w][g] == -INFINITY ? 0.0f : expf(w_max[w][g] - m);
        if (weight == 0.0f) continue;
        x += weight * (t == 1 ? w_sp[w][g] : t == 2 ? w_sd[w][g] : t >= kPartialHead ? w_acc[w][t - kPartialHead] : 0.0f);
      }
      out[t] = t == 0 ? m : x;
    }
  }
}

}  // namespace

namespace decode {

void launch_simt(const DeviceStep& step, const AttentionLaunch& launch, const float* q, int splits, float* partials,
                 cudaStream_t stream) {
  const int groups = launch.num_heads / step.num_kv_heads;
  const int tiles = (groups + kGroupTile - 1) / kGroupTile;
  const dim3 grid(static_cast<unsigned>(step.num_decode_rows), static_cast<unsigned>(step.num_kv_heads * tiles),
                  static_cast<unsigned>(splits));
  const size_t smem = 2 * static_cast<size_t>(kWarps) * 32 * value_row_stride(step.entry_bytes);
  auto launch_kernel = [&](auto kernel) {
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "cudaFuncSetAttribute(decode_kernel)");
    kernel<<<grid, kWarps * 32, smem, stream>>>(step, launch, q, splits, partials);
  };
  switch (static_cast<KvDType>(step.dtype)) {
    case KvDType::F32: launch_kernel(decode_kernel<KvDType::F32>); break;
    case KvDType::F16: launch_kernel(decode_kernel<KvDType::F16>); break;
    case KvDType::BF16: launch_kernel(decode_kernel<KvDType::BF16>); break;
    case KvDType::Q8_0: launch_kernel(decode_kernel<KvDType::Q8_0>); break;
  }
  check_launch("decode_kernel");
}

}  // namespace decode

}  // namespace podkv::cuda
