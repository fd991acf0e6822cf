// The KV pool on the device: the step's new keys and values written through
// the view, encoded in the pool's entry type (ops/kv_write.h), on their own or
// fused with the split and RoPE of the stacked q, k, v projection (one launch
// per layer instead of two in a decode step), and the entry copies the host
// bookkeeping asks for when token selection moves kept tokens.
#include <cuda_bf16.h>

#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/elements.cuh"
#include "cuda/kernels.h"
#include "cuda/paged.cuh"
#include "cuda/pdl.cuh"
#include "cuda/rope.cuh"
#include "kv/token_classes.h"

namespace podkv::cuda {

namespace {

// src's d floats encoded as T into entry e (null: nothing), by one warp.
template <KvDType T>
__device__ __forceinline__ void encode_to(const DeviceStep& s, uint8_t* e, const float* src, int lane) {
  const int d = s.head_dim;
  if (e == nullptr) return;
  float x[kLaneElems];
#pragma unroll
  for (int c = 0; c < kLaneElems; ++c) x[c] = lane + 32 * c < d ? src[lane + 32 * c] : 0.0f;
  encode_entry<T>(x, lane, d, e);
}

// One warp writes row `row`'s key (kind kKeys) or value of KV head h, `src` its d floats, into the
// entry of its position, encoded as T; nothing where the layout keeps no such entry.
template <KvDType T>
__device__ __forceinline__ void write_entry(const DeviceStep& s, int layer, int64_t row, int h, int kind,
                                            const float* src, int lane) {
  encode_to<T>(s, entry_of_row(s, layer, row, h, kind), src, lane);
}

// One block per (row, KV head): warp 0 writes the key, warp 1 the value.
template <KvDType T>
__global__ void kv_write_kernel(DeviceStep s, int layer, const float* k, const float* v) {
  const int64_t row = blockIdx.x;
  const int h = blockIdx.y;
  const int kind = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t at = (row * s.num_kv_heads + h) * s.head_dim;
  write_entry<T>(s, layer, row, h, kind, (kind == kKeys ? k : v) + at, lane);
}

// split_qkv_rope and kv_write in one launch: one warp per (row, unit) at a time, units [0, heads)
// the query heads, then the KV heads' keys, then their values; a block is `units_per_block` units
// of one row (its kFusedWarps warps taking every kFusedWarps-th), whose angles' sines and cosines it
// takes once (every head of a row rotates by the same angles: per head they cost more than the
// row's reads and writes). Steps of kWholeRowBlocks rows or more take a whole row per block, so the
// sines and cosines (in double) are taken once per row, not once per 8 units: a 32K prompt's RoPE
// and KV writes went from 26.7 to 21.9 ms on the H200 (session 24). Smaller steps keep 8 units per
// block, for more blocks in flight. The choice is by rows alone: decode batches of 32 sequences or
// more take whole-row blocks too (not timed; raising the bound to 256 is
// docs/gpu-bench/kernel-tuning/session24-rope-rows-256-untested.patch). backend_ops' kv_write
// cases (steps of 43 rows) take the whole-row blocks, the CUDA fixtures' decode steps the others.
// A key or value head is written to k or v first (rotated, or copied), then read back by the same
// warp (__syncwarp orders the warp's global writes before its reads) and encoded as
// kv_write_kernel encodes it: the same q, k, v and pool bytes as the two launches.
constexpr int kFusedWarps = 8;
constexpr int kWholeRowBlocks = 32;

// What a block of both fused kernels takes before pdl_wait (pdl.cuh), from the step's metadata only:
// the angles of its row (sines and cosines in double, in shared memory), its units, and the entry of
// the warp's first unit when that is a key or a value.
struct FusedRow {
  int64_t row;
  int warp, lane, heads, H, d, half;
  int64_t nq, nkv;
  int first_unit, end;
  uint8_t* first_entry = nullptr;
  double *sin_s, *cos_s;

  __device__ FusedRow(const DeviceStep& s, int layer, int heads_, const int64_t* positions, const float* inv_freq,
                      int units_per_block, double* sin_, double* cos_)
      : row(blockIdx.x), warp(threadIdx.x / 32), lane(threadIdx.x % 32), heads(heads_), H(s.num_kv_heads),
        d(s.head_dim), half(s.head_dim / 2), nq(static_cast<int64_t>(heads_) * s.head_dim),
        nkv(static_cast<int64_t>(s.num_kv_heads) * s.head_dim), sin_s(sin_), cos_s(cos_) {
    for (int i = threadIdx.x; i < half; i += blockDim.x) rope_sincos(i, positions[row], inv_freq, sin_s[i], cos_s[i]);
    const int first = blockIdx.y * units_per_block;
    end = min(heads + 2 * H, first + units_per_block);
    first_unit = first + warp;
    if (first_unit < end && first_unit >= heads) {
      const KvUnit u = kv_unit(first_unit, heads, H);
      first_entry = entry_of_row(s, layer, row, u.h, u.kind);
    }
  }
  __device__ uint8_t* entry(const DeviceStep& s, int layer, int unit, const KvUnit& u) const {
    return unit == first_unit ? first_entry : entry_of_row(s, layer, row, u.h, u.kind);
  }
};

// With q_norm (Qwen3; k_norm too): each q and k head RMS-normalized first (rms_norm_head, the same
// bits as head_rms_norm's launch before this one), written to its float32 row and rotated there.
template <KvDType T>
__global__ void __launch_bounds__(kFusedWarps * 32)
    split_qkv_rope_kv_write_kernel(DeviceStep s, int layer, const float* qkv, int heads, const int64_t* positions,
                                   const float* inv_freq, bool interleaved, float* q, float* k, float* v,
                                   int units_per_block, const float* q_norm, const float* k_norm, double eps) {
  pdl_launch_dependents();  // the attention's blocks may start; they wait for this kernel to finish
  __shared__ double sin_s[kMaxHeadDim / 2], cos_s[kMaxHeadDim / 2];
  const FusedRow r(s, layer, heads, positions, inv_freq, units_per_block, sin_s, cos_s);
  const int d = r.d, lane = r.lane;
  const float* src = qkv + r.row * (r.nq + 2 * r.nkv);
  pdl_wait();  // qkv from the kernel before
  __syncthreads();
  // A q or k head rotated from `from` into `to` (normalized into `to` first where norm is given).
  auto rotate_head = [&](const float* from, float* to, const float* norm) {
    if (norm != nullptr) {
      rms_norm_head(from, to, norm, d, eps, lane);
      __syncwarp();  // the warp's writes before its lanes read other lanes' elements
      from = to;
    }
    for (int i = lane; i < r.half; i += 32) rotate_pair_by(from, to, i, d, interleaved, sin_s[i], cos_s[i]);
  };
  for (int unit = r.first_unit; unit < r.end; unit += kFusedWarps) {
    if (unit < heads) {
      rotate_head(src + unit * d, q + r.row * r.nq + unit * d, q_norm);
      __syncwarp();  // the warp's lanes together again before its next head (as after a key's encoding)
      continue;
    }
    const KvUnit u = kv_unit(unit, heads, r.H);
    float* dst = (u.kind == kKeys ? k : v) + r.row * r.nkv + u.h * d;
    if (u.kind == kKeys) {
      rotate_head(src + r.nq + u.h * d, dst, k_norm);
    } else {
      for (int i = lane; i < d; i += 32) dst[i] = src[r.nq + r.nkv + u.h * d + i];
    }
    __syncwarp();
    encode_to<T>(s, r.entry(s, layer, unit, u), dst, lane);
  }
}

// The prompt form (split_qkv_rope_kv_write's q_bf16: a step whose attention is the prefill
// kernels' alone, which read nothing else) writes no float32: q rotated, times q_scale and rounded
// to bf16 into q_bf16 (the product and rounding the prefill kernels' load_q makes of the float32 q),
// a key rotated into the warp's row of shared memory and encoded from there, a value encoded from
// the elements the lane loaded. The same entries and Q fragments as the float32 form; a 4,096-row
// chunk of the Llama-3-8B shape writes 67 MB less a layer (q in half the bytes, no k or v). In:
// qkv's type, float or bf16 bits (uint16_t: the projection's output in bf16, its values widened
// exactly).
template <typename In>
__device__ __forceinline__ float widen(In x) {
  if constexpr (std::is_same_v<In, float>) return x;
  else return __uint_as_float(static_cast<uint32_t>(x) << 16);
}

// A warp takes its units kPromptGroup at a time: the group's loads (and its keys' and values' entry
// addresses) first, all in flight together, then the rotations, encodings and stores. One unit at a
// time (load, rotate, store, the next) held a 4,096-row chunk of the Llama-3-8B shape at 1.6 TB/s on
// an H100 whose copy rate is 3.0 (session 40): a warp's six units were six memory round trips.
constexpr int kPromptGroup = 4;

template <KvDType T, typename In>
__global__ void __launch_bounds__(kFusedWarps * 32, 4)
    rope_kv_write_prompt_kernel(DeviceStep s, int layer, const void* qkv, int heads, const int64_t* positions,
                                const float* inv_freq, bool interleaved, uint16_t* q_bf16, float q_scale,
                                int units_per_block) {
  pdl_launch_dependents();
  __shared__ double sin_s[kMaxHeadDim / 2], cos_s[kMaxHeadDim / 2];
  __shared__ float rows_s[kFusedWarps][kMaxHeadDim];  // a warp's rotated key
  const FusedRow r(s, layer, heads, positions, inv_freq, units_per_block, sin_s, cos_s);
  const int d = r.d, lane = r.lane;
  const In* src = static_cast<const In*>(qkv) + r.row * (r.nq + 2 * r.nkv);
  float* own = rows_s[r.warp];
  // Pair j of this lane (i = lane + 32 j < half): its elements a and b.
  auto pair_a = [&](int i) { return interleaved ? 2 * i : i; };
  auto pair_b = [&](int i) { return interleaved ? 2 * i + 1 : i + r.half; };
  pdl_wait();  // qkv from the kernel before
  __syncthreads();
  for (int base = r.first_unit; base < r.end; base += kPromptGroup * kFusedWarps) {
    // in[g]: a query head's or key's pairs j = 0, 1 as (a, b, a, b), or a value's elements lane + 32 c.
    float in[kPromptGroup][4];
    uint8_t* entries[kPromptGroup];
#pragma unroll
    for (int g = 0; g < kPromptGroup; ++g) {
      const int unit = base + g * kFusedWarps;
      entries[g] = nullptr;
#pragma unroll
      for (int c = 0; c < 4; ++c) in[g][c] = 0.0f;
      if (unit >= r.end) continue;
      const In* head = src + unit * d;  // q heads, then k, then v: qkv's column order
      const bool value = unit >= heads + r.H;
      if (unit >= heads) entries[g] = r.entry(s, layer, unit, kv_unit(unit, heads, r.H));
      if (value) {
#pragma unroll
        for (int c = 0; c < 4; ++c)
          if (lane + 32 * c < d) in[g][c] = widen(head[lane + 32 * c]);
      } else {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int i = lane + 32 * j;
          if (i < r.half) in[g][2 * j] = widen(head[pair_a(i)]), in[g][2 * j + 1] = widen(head[pair_b(i)]);
        }
      }
    }
#pragma unroll
    for (int g = 0; g < kPromptGroup; ++g) {
      const int unit = base + g * kFusedWarps;
      if (unit >= r.end) break;
      if (unit >= heads + r.H) {  // a value: the elements encode_entry takes, as they are
        if (entries[g] != nullptr) encode_entry<T>(in[g], lane, d, entries[g]);
        continue;
      }
      uint16_t* to = unit < heads ? q_bf16 + r.row * r.nq + unit * d : nullptr;  // q's row (keys: none)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int i = lane + 32 * j;
        if (i >= r.half) continue;
        float va = in[g][2 * j], vb = in[g][2 * j + 1];
        rotate_values(va, vb, sin_s[i], cos_s[i]);
        if (unit < heads) {
          to[pair_a(i)] = __bfloat16_as_ushort(__float2bfloat16_rn(va * q_scale));
          to[pair_b(i)] = __bfloat16_as_ushort(__float2bfloat16_rn(vb * q_scale));
        } else {
          own[pair_a(i)] = va, own[pair_b(i)] = vb;
        }
      }
      if (unit < heads) continue;
      __syncwarp();
      encode_to<T>(s, entries[g], own, lane);
      __syncwarp();  // the row is read before the warp's next key overwrites it
    }
  }
}

// Copies in order in one block (a later copy may read what an earlier one wrote).
__global__ void copy_entries_kernel(uint8_t* pool, int64_t page_bytes, int64_t entry_bytes, const EntryCopy* copies,
                                    int64_t count) {
  for (int64_t c = 0; c < count; ++c) {
    const EntryCopy cp = copies[c];
    const uint8_t* src = pool + cp.src_page * page_bytes + cp.src_slot * entry_bytes;
    uint8_t* dst = pool + cp.dst_page * page_bytes + cp.dst_slot * entry_bytes;
    // Entries never overlap partly: src and dst are one entry or disjoint.
    for (int64_t i = threadIdx.x; i < entry_bytes; i += blockDim.x) dst[i] = src[i];
    __syncthreads();
  }
}

// The prompt form's kernel for entries of type T and qkv in bf16 or float32, given to launch.
template <KvDType T, typename Launch>
void prompt_kernels(bool qkv_bf16, const Launch& launch) {
  if (qkv_bf16) launch(rope_kv_write_prompt_kernel<T, uint16_t>);
  else launch(rope_kv_write_prompt_kernel<T, float>);
}

}  // namespace

void kv_write(const DeviceStep& step, int layer, const float* k, const float* v, cudaStream_t stream) {
  if (step.rows == 0) return;
  check(step.head_dim <= kMaxHeadDim, "cuda kv_write: head_dim " + std::to_string(step.head_dim) + " above 128");
  const dim3 grid(static_cast<unsigned>(step.rows), static_cast<unsigned>(step.num_kv_heads));
  switch (static_cast<KvDType>(step.dtype)) {
    case KvDType::F32: kv_write_kernel<KvDType::F32><<<grid, 64, 0, stream>>>(step, layer, k, v); break;
    case KvDType::F16: kv_write_kernel<KvDType::F16><<<grid, 64, 0, stream>>>(step, layer, k, v); break;
    case KvDType::BF16: kv_write_kernel<KvDType::BF16><<<grid, 64, 0, stream>>>(step, layer, k, v); break;
    case KvDType::Q8_0: kv_write_kernel<KvDType::Q8_0><<<grid, 64, 0, stream>>>(step, layer, k, v); break;
  }
  check_launch("kv_write_kernel");
}

void split_qkv_rope_kv_write(const DeviceStep& step, int layer, const float* qkv, int heads, const int64_t* positions,
                             const float* inv_freq, bool interleaved, float* q, float* k, float* v, uint16_t* q_bf16,
                             float q_scale, bool qkv_bf16, const HeadNorms& norms, cudaStream_t stream) {
  if (step.rows == 0) return;
  check(step.head_dim <= kMaxHeadDim,
        "cuda split_qkv_rope_kv_write: head_dim " + std::to_string(step.head_dim) + " above 128");
  check(q_bf16 != nullptr || !qkv_bf16, "cuda split_qkv_rope_kv_write: qkv in bf16 needs the prompt form (q_bf16)");
  check((norms.q == nullptr) == (norms.k == nullptr) && (norms.q == nullptr || q_bf16 == nullptr),
        "cuda split_qkv_rope_kv_write: q and k norms go together, and only with the float32 form");
  const int units = heads + 2 * step.num_kv_heads;
  const int per_block = step.rows >= kWholeRowBlocks ? units : kFusedWarps;
  const dim3 grid(static_cast<unsigned>(step.rows), static_cast<unsigned>((units + per_block - 1) / per_block));
  // A programmatic dependent of the projection before it (pdl.cuh).
  const auto launch = [&](auto kernel) {
    launch_pdl(PdlUse::kDecode, kernel, grid, dim3(kFusedWarps * 32), 0, stream, "split_qkv_rope_kv_write_kernel",
               step, layer, qkv, heads, positions, inv_freq, interleaved, q, k, v, per_block, norms.q, norms.k,
               norms.eps);
  };
  const auto prompt = [&](auto kernel) {
    launch_pdl(PdlUse::kPrompt, kernel, grid, dim3(kFusedWarps * 32), 0, stream, "rope_kv_write_prompt_kernel", step,
               layer, static_cast<const void*>(qkv), heads, positions, inv_freq, interleaved, q_bf16, q_scale,
               per_block);
  };
  const KvDType t = static_cast<KvDType>(step.dtype);
  if (q_bf16 != nullptr) {
    switch (t) {
      case KvDType::F32: prompt_kernels<KvDType::F32>(qkv_bf16, prompt); break;
      case KvDType::F16: prompt_kernels<KvDType::F16>(qkv_bf16, prompt); break;
      case KvDType::BF16: prompt_kernels<KvDType::BF16>(qkv_bf16, prompt); break;
      case KvDType::Q8_0: prompt_kernels<KvDType::Q8_0>(qkv_bf16, prompt); break;
    }
    return;
  }
  switch (t) {
    case KvDType::F32: launch(split_qkv_rope_kv_write_kernel<KvDType::F32>); break;
    case KvDType::F16: launch(split_qkv_rope_kv_write_kernel<KvDType::F16>); break;
    case KvDType::BF16: launch(split_qkv_rope_kv_write_kernel<KvDType::BF16>); break;
    case KvDType::Q8_0: launch(split_qkv_rope_kv_write_kernel<KvDType::Q8_0>); break;
  }
}

void copy_entries(uint8_t* pool, int64_t page_bytes, int64_t entry_bytes, const EntryCopy* copies, int64_t count,
                  cudaStream_t stream) {
  if (count == 0) return;
  copy_entries_kernel<<<1, 256, 0, stream>>>(pool, page_bytes, entry_bytes, copies, count);
  check_launch("copy_entries_kernel");
}

}  // namespace podkv::cuda
