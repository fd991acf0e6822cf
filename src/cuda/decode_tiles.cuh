// The tiles of decode_mma_kernel (attention_decode.cu): a warp's walk over its chunk of a row's key
// spans in 16-key tiles, the entries of a tile in the paged pool, and the two shared-memory layouts
// a tile is copied into ahead of its products (the per-lane cp.async ring, DecodeSlots; the bulk
// copies of whole entries, BulkStage and bulk_tiles).
#pragma once

#include <cstdint>

#include "cuda/attention_decode.cuh"
#include "cuda/sm90a/barriers.cuh"
#include "cuda/warp_attention.cuh"

namespace podkv::cuda::decode {

// The tiles of a warp's chunk [v0, v1) of the virtual key range, in order: tile [t0, min(t0 + 16, hi))
// of span n (virtual indices; position = virtual index + offset). Done when n == count. 32-bit
// (positions and slots fit, as in paged.cuh), and the current span's streams and class are kept
// here: the spans array lives in local memory (indexed by n), read only when a span is entered.
struct TileCursor {
  int n = 0;
  int32_t span_start = 0, t0 = 0, hi = 0, offset = 0;
  DeviceStream keys, values;
  bool distant = false;

  // From span n on, the first span that meets [v0, v1).
  __device__ __forceinline__ void enter(const Span (&spans)[kMaxSpans], int count, int32_t v0, int32_t v1) {
    for (; n < count; ++n) {
      const Span& sp = spans[n];
      const int32_t begin = static_cast<int32_t>(sp.begin), end = static_cast<int32_t>(sp.end);
      const int32_t len = end > begin ? end - begin : 0;
      const int32_t lo = max(v0, span_start);
      hi = min(v1, span_start + len);
      if (lo < hi) {
        t0 = lo, offset = begin - span_start;
        keys = sp.keys, values = sp.values, distant = sp.distant;
        return;
      }
      span_start += len;
    }
  }
  __device__ __forceinline__ void advance(const Span (&spans)[kMaxSpans], int count, int32_t v0, int32_t v1) {
    t0 += 16;
    if (t0 < hi) return;
    const Span& sp = spans[n];
    span_start += static_cast<int32_t>(sp.end - sp.begin);
    ++n;
    enter(spans, count, v0, v1);
  }
};

struct TilePosition {
  int32_t p0 = 0;
  uint32_t logical = 0, slot = 0;
};

// The entries of a 16-key tile in one stream: positions (or slots) p0 + d, d < 16. With pages of 16
// or more tokens the tile lies in at most two consecutive pages, so the page table is read twice
// per tile and stream by the whole warp (one address: a broadcast), and a lane's entry is a select
// and a multiply-add; with smaller pages (kSmallPages) each lane looks its entries up (a 32-bit
// division each).
template <bool kSmallPages>
struct TileEntries {
  const uint8_t* first = nullptr;   // slot 0 of p0's page (null: no page)
  const uint8_t* second = nullptr;  // slot 0 of the next page
  uint32_t slot0 = 0;               // p0's slot in its page
  int32_t p0 = 0;
  DeviceStream stream;

  __device__ __forceinline__ static const uint8_t* page_base(const DeviceStep& s, const DeviceStream& st, uint32_t i) {
    if (i >= st.num_pages) return nullptr;
    const int32_t page = st.pages[i];
    return page < 0 ? nullptr : s.pool + static_cast<int64_t>(page) * s.page_bytes;
  }
  __device__ __forceinline__ TileEntries(const DeviceStep& s, const DeviceStream& st, const TilePosition& t)
      : slot0(t.slot), p0(t.p0), stream(st) {
    if constexpr (!kSmallPages) first = page_base(s, st, t.logical), second = page_base(s, st, t.logical + 1);
  }
  // Entry p0 + d (d < keys): `ok` whether it exists (within the tile, on a page), and its address,
  // or where it does not, an address in the pool's first page that a zero-byte copy may name (no
  // select per copy). The offset in the page is a 32-bit product (pages are under 2 GiB).
  __device__ __forceinline__ const uint8_t* at(const DeviceStep& s, int d, int keys, bool& ok) const {
    if constexpr (kSmallPages) {
      const uint8_t* e = d < keys ? entry_at(s, stream, p0 + d) : nullptr;
      ok = e != nullptr;
      return ok ? e : s.pool;
    } else {
      const uint32_t slot = slot0 + static_cast<uint32_t>(d), per_page = static_cast<uint32_t>(s.page_tokens);
      const bool next = slot >= per_page;
      const uint8_t* base = next ? second : first;
      const uint32_t in_page = next ? slot - per_page : slot;
      ok = d < keys && base != nullptr;
      return (ok ? base : s.pool) + in_page * static_cast<uint32_t>(s.entry_bytes);
    }
  }
};

// The cursor's tile start: position p0, its page (logical index) and slot (one 32-bit division,
// for the key and the value stream both; none with small pages, looked up per lane).
template <bool kSmallPages>
__device__ __forceinline__ TilePosition tile_position(const DeviceStep& s, const TileCursor& cur) {
  TilePosition t;
  t.p0 = cur.t0 + cur.offset;
  if constexpr (!kSmallPages) {
    const uint32_t per_page = static_cast<uint32_t>(s.page_tokens);
    t.logical = static_cast<uint32_t>(t.p0) / per_page;
    t.slot = static_cast<uint32_t>(t.p0) - t.logical * per_page;
  }
  return t;
}

template <int D>
struct DecodeSlots {
  using W = WarpAttention<D, true>;
  static constexpr int kKeySlots = 2 * W::kKeyChunks;     // keys g, g + 8: chunks 4 j + c
  static constexpr int kSlots = kKeySlots + 4 * W::kValueHalves;  // + values 2c, 2c+1, 2c+8, 2c+9
  static constexpr int kStageBytes = kSlots * 32 * 16;   // one warp's tile
};

// decode_mma_kernel's tiles by bulk copies (sm_90; kBulk, pages of 16 or more tokens, bf16 entries),
// counted on the stage's mbarrier, in one of two layouts:
//  - kRuns (the default, PODKV_CUDA_DECODE_COPY=runs): the tile's 16 key rows, then its 16 value
//    rows, each 2 D bytes, unpadded; lane 0 copies the tile's keys with one bulk copy per page they
//    lie in (at most two: a run of consecutive entries of a page each) and its values the same way,
//    so a tile takes 2 to 4 copy instructions. The fragment reads meet 2-way (keys) and 4-way
//    (values) bank conflicts on rows 2 D bytes apart;
//  - per lane (PODKV_CUDA_DECODE_COPY=bulk): lane l brings row l % 16 of the keys (l < 16) or the
//    values (l >= 16) with one cp.async.bulk of the entry. Each copy names its lane's addresses, which
//    the instruction takes from uniform registers, so ptxas issues a tile's 32 copies one lane at a
//    time (an ELECT loop of 9 instructions per copy: a third of the kernel's stall samples at batch 1
//    and 4K, session 40). Rows are padded so that the fragment reads meet no bank conflicts: key rows
//    kKeyStride apart (64 mod 128 bytes: lanes (g, c) and (g + 1, c) of a quarter-warp read rows g and
//    g + 1), value rows kValueStride apart (16 mod 64: rows 2c of a quarter-warp land 32 bytes apart).
// A row that gets no copy (past the tile's keys, or without a page) is zeroed by lane (row, kind), as
// the per-lane cp.async copies zero-fill it. The copies go S - 1 tiles ahead of the products, as in
// the cp.async ring, issued at the top of an iteration from page-table reads made one iteration
// earlier (`prepare`, then `launch`), so that the reads' latency is spent computing (session 22:
// looked up right before its copies, one lookup per tile was slower than per-lane lookups in
// parallel).
template <int D, bool kRuns>
struct BulkStage {
  static constexpr int kRowBytes = 2 * D;  // a bf16 entry
  static constexpr int kKeyStride = kRuns ? kRowBytes : kRowBytes + (64 - kRowBytes % 128 + 128) % 128;
  static constexpr int kValueStride = kRuns ? kRowBytes : kRowBytes + (16 - kRowBytes % 64 + 64) % 64;
  static constexpr int kBytes = 16 * (kKeyStride + kValueStride);  // one warp's stage
  static_assert(kRuns || (kKeyStride % 128 == 64 && kValueStride % 64 == 16), "conflict-free row strides");
};

template <int D, int S, bool kRuns, typename W, typename Compute>
__device__ __forceinline__ void bulk_tiles(const DeviceStep& s, const Span (&spans)[kMaxSpans], int count, int32_t v0,
                                           int32_t v1, W& w, int warp, int lane, Compute& compute) {
  using Stage = BulkStage<D, kRuns>;
  constexpr int kRowBytes = Stage::kRowBytes, kKeyStride = Stage::kKeyStride, kValueStride = Stage::kValueStride;
  extern __shared__ __align__(16) uint8_t decode_ring[];  // [kWarps][S][16 key rows, 16 value rows]
  __shared__ uint64_t full[kWarps][S];
  uint8_t* ring = decode_ring + static_cast<size_t>(warp) * S * Stage::kBytes;
  auto key_rows = [&](int stage) { return ring + stage * Stage::kBytes; };
  auto value_rows = [&](int stage) { return ring + stage * Stage::kBytes + 16 * kKeyStride; };
  if (lane == 0) {
    for (int st = 0; st < S; ++st) sm90a::mbarrier_init(&full[warp][st], 1);
    sm90a::mbarrier_init_fence();
  }
  __syncwarp();
  int32_t keys[S];
  bool tile_distant[S];
  uint32_t phases = 0;  // bit st: the parity of stage st's next phase
  TileCursor ahead;
  ahead.enter(spans, count, v0, v1);
  // The tile `prepare` looked up for the next `launch`: rows [0, n1) in the first pages (from `slot`
  // on), [n1, n) in the next ones (null: no page); n = 0: none (past the last tile).
  const uint8_t *key_first = nullptr, *key_second = nullptr, *value_first = nullptr, *value_second = nullptr;
  uint32_t slot = 0;
  int n = 0, n1 = 0;
  bool distant = false;
  auto prepare = [&] {
    n = 0;
    if (ahead.n >= count) return;
    const TilePosition at = tile_position<false>(s, ahead);
    const TileEntries<false> ke(s, ahead.keys, at), ve(s, ahead.values, at);
    key_first = ke.first, key_second = ke.second, value_first = ve.first, value_second = ve.second;
    slot = at.slot;
    n = min(16, ahead.hi - ahead.t0);
    n1 = min(n, static_cast<int>(s.page_tokens - at.slot));
    distant = ahead.distant;
    ahead.advance(spans, count, v0, v1);
  };
  // This lane's row of the tile into `stage`: a copy, or zeros.
  const int r = lane % 16;
  const bool key_lane = lane < 16;
  auto launch = [&](int stage) {
    keys[stage] = n, tile_distant[stage] = distant;
    if (n == 0) return;
    const uint8_t* page = r < n1 ? (key_lane ? key_first : value_first) : (key_lane ? key_second : value_second);
    const bool present = r < n && page != nullptr;
    uint8_t* row = key_lane ? key_rows(stage) + r * kKeyStride : value_rows(stage) + r * kValueStride;
    uint64_t* bar = &full[warp][stage];
    if constexpr (kRuns) {
      __syncwarp();  // every lane has read the stage's previous tile
      if (!present) {  // rows no copy writes
#pragma unroll
        for (int i = 0; i < kRowBytes / 16; ++i) reinterpret_cast<uint4*>(row)[i] = make_uint4(0, 0, 0, 0);
      }
      if (lane == 0) {
        // Rows [0, n1) from the first pages (from `slot` on), [n1, n) from the next ones (slot 0 on).
        const uint32_t first_rows = n1, second_rows = n - n1;
        auto copied = [&](const uint8_t* first, const uint8_t* second) {
          return (first != nullptr ? first_rows : 0u) + (second != nullptr ? second_rows : 0u);
        };
        sm90a::fence_proxy_async();  // the stage's reads before the copies' writes
        sm90a::mbarrier_arrive_expect_tx(
            bar, (copied(key_first, key_second) + copied(value_first, value_second)) * kRowBytes);
        auto copy = [&](uint8_t* to, const uint8_t* page_base, uint32_t from_slot, uint32_t rows) {
          if (page_base != nullptr && rows > 0)
            sm90a::bulk_copy_to_shared(to, page_base + from_slot * kRowBytes, rows * kRowBytes, bar);
        };
        copy(key_rows(stage), key_first, slot, first_rows);
        copy(key_rows(stage) + first_rows * kRowBytes, key_second, 0, second_rows);
        copy(value_rows(stage), value_first, slot, first_rows);
        copy(value_rows(stage) + first_rows * kRowBytes, value_second, 0, second_rows);
      }
      return;
    }
    const uint32_t rows = __popc(__ballot_sync(0xffffffffu, present));
    if (lane == 0) sm90a::mbarrier_arrive_expect_tx(bar, rows * kRowBytes);
    __syncwarp();  // every lane has read the stage's previous tile; the expected bytes are set
    if (present) {
      sm90a::fence_proxy_async();  // the stage's reads, and this lane's zero stores, before the copy's writes
      const uint32_t at = r < n1 ? slot + r : r - n1;
      sm90a::bulk_copy_to_shared(row, page + at * kRowBytes, kRowBytes, bar);
    } else {
#pragma unroll
      for (int i = 0; i < kRowBytes / 16; ++i) reinterpret_cast<uint4*>(row)[i] = make_uint4(0, 0, 0, 0);
    }
  };
  // Tile j goes to stage j % S. Its copies are launched S - 1 tiles ahead of its products, at the top
  // of an iteration, from lookups made one iteration before (during the products in between).
  prepare();
#pragma unroll
  for (int st = 0; st + 1 < S; ++st) launch(st), prepare();
  for (bool more = true; more;) {
#pragma unroll
    for (int st = 0; st < S; ++st) {
      launch((st + S - 1) % S);  // the stage computed last
      prepare();
      if (keys[st] == 0) {  // past the last tile (and so is every later one: no copy in flight)
        more = false;
        break;
      }
      sm90a::mbarrier_wait(&full[warp][st], (phases >> st) & 1u);
      phases ^= 1u << st;
      __syncwarp();  // the rows other lanes zeroed
      uint4 k[2][W::kKeyChunks];
      uint4 v[4][W::kValueHalves];
#pragma unroll
      for (int nb = 0; nb < 2; ++nb)
#pragma unroll
        for (int j = 0; j < W::kKeyChunks; ++j)
          k[nb][j] = *reinterpret_cast<const uint4*>(key_rows(st) + (w.g + 8 * nb) * kKeyStride + 16 * (4 * j + w.c));
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int hv = 0; hv < W::kValueHalves; ++hv) {
          const int chunk = w.g + 8 * hv, row_i = 2 * w.c + i % 2 + 8 * (i / 2);
          v[i][hv] = 8 * chunk < D ? *reinterpret_cast<const uint4*>(value_rows(st) + row_i * kValueStride + 16 * chunk)
                                   : make_uint4(0, 0, 0, 0);
        }
      compute(k, v, keys[st], tile_distant[st]);
    }
  }
}

}  // namespace podkv::cuda::decode
