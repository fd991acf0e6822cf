// Blocked attention for a chunk of many queries (prefill), flash-attention style.
//
// Work unit: one KV head h and a block of Bq consecutive query positions. Its
// rows are (query t, query head g of h), R = Bq·G rows, padded to Rp (a
// multiple of the vector width W). The block's queries are transposed once
// into QT [d, Rp]; then, for each part (proximal, distant) and each span of
// keys the part reads, keys are taken Bk = 64 at a time straight from their
// pages (row pointers, no copy):
//   S^T [Bk, Rp] = K [Bk, d] · QT          (tile_4xN: 4 keys × up to 4W rows)
//   mask: key j counts for row r iff lo[r] <= j < hi[r] (token classes, causality)
//   online softmax per row: running max m, sum l, rescale of O by exp(m_old - m)
//   O [Rp, d] += P [Rp, Bk] · V [Bk, d]    (tile_4xN: 4 rows × up to 4W of d)
// Computing S transposed keeps query rows on the vector lanes, so the softmax
// is vectorised across rows and P·V broadcasts P from it with stride Rp.
// Finally the two parts are merged per row by their log-sum-exp, exactly as
// the per-query kernel does (attention.cpp), which stays the definition.
//
// Selection scores: when rows of the block are scored (position >= score_from,
// distant keys of a selection group), a second pass over the scored spans
// (recent window, selection store, distant window; not the sink) recomputes
// S^T tile by tile, takes the final probabilities p = exp(s - m) / (s_P + s_D)
// with the row's joint max m (skipped and masked entries 0), and adds each
// key's sum over the scored rows to the group's scores. One thread owns each
// KV head while scoring, so the block sums land in block order.
//
// Row intervals (pod-method.md token classes) for a query at position pos,
// with sink_end = min(ns, pos + 1) and recent_begin = max(sink_end, pos - nr + 1):
//   proximal: [0, sink_end) and [recent_begin, pos + 1)  (one span [0, pos + 1) without a window)
//   distant, position-indexed: [sink_end, recent_begin)
//   distant, selection group: store slots [0, store_size) and [max(sink_end, window_base), recent_begin)
// A row whose distant part is skipped (tau) or masked gets empty distant intervals.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/attention_internal.h"
#include "ops/attention_tile.h"

namespace podkv::detail {

namespace {

constexpr int64_t kKeyTile = 64;    // Bk: keys per tile (S^T tile 64 × Rp floats stays in L1/L2)
constexpr int64_t kBlockRows = 128; // target R = Bq·G rows per block

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Keys [begin, end) of one stream pair with a valid interval per row.
struct Segment {
  StreamView keys, values;
  std::vector<int64_t> lo, hi;  // [Rp]; lo >= hi = empty
  float* scores = nullptr;      // selection scores: scores[j - score_base] for index j; null = not scored
  int64_t score_base = 0;
};

// Running softmax state of one part for every row of the block.
struct RowPartial {
  std::vector<float> max, sum, acc;  // [Rp], [Rp], [Rp, dp] (unnormalised output)
  void reset(int64_t rows, int64_t dp) {
    max.assign(rows, kNegInf);
    sum.assign(rows, 0.0f);
    acc.assign(static_cast<size_t>(rows) * dp, 0.0f);
  }
};

// Per-thread buffers, reused across blocks.
struct Scratch {
  std::vector<float> qt;        // [d, Rp] queries of the block, transposed
  std::vector<float> st;        // [Bk (+3), Rp] scores, then probabilities, of one tile
  std::vector<float> corr;      // [Rp] exp(m_old - m_new) of the current tile
  std::vector<int32_t> lo_rel, hi_rel;  // [Rp] row intervals relative to the tile
  std::vector<float> zero_row;  // [d] stands in for the keys that pad a tile to a multiple of 4
  std::vector<float> value_pad; // [Bk, dp] value rows copied when d is not a multiple of W
  std::vector<float> key_buf, value_buf;  // [Bk, d] decoded rows of f16/bf16/q8_0 entries
  std::vector<const float*> key_rows, value_rows, qt_rows;
  Segment seg[4];               // sink, recent, store, distant window
  RowPartial prox, dist;
  std::vector<float> row_max, row_inv;  // [Rp] joint max and 1 / (s_P + s_D) per row, for scoring
  std::vector<int64_t> row_t;   // [Rp] query index of a row, -1 for padding
  std::vector<uint8_t> skip;    // [Rp] distant part skipped by tau
};

// Collects row pointers of positions/slots [begin, end) of `view`, page run by
// page run: into the pool for f32 entries, else into rows decoded into `buf`.
void gather_rows(const StreamView& view, KvDType type, int dim, int64_t begin, int64_t end, const float** rows,
                 std::vector<float>& buf) {
  if (type != KvDType::F32 && buf.size() < static_cast<size_t>((end - begin) * dim))
    buf.resize(static_cast<size_t>((end - begin) * dim));
  float* decoded = buf.data();
  for (int64_t j = begin; j < end;) {
    const int64_t run = std::min(end - j, view.page_tokens - j % view.page_tokens);
    const uint8_t* entry = view.at(j);
    for (int64_t r = 0; r < run; ++r, entry += view.entry_bytes) {
      if (type == KvDType::F32) {
        *rows++ = reinterpret_cast<const float*>(entry);
      } else {
        kv_decode(type, entry, dim, decoded);
        *rows++ = decoded;
        decoded += dim;
      }
    }
    j += run;
  }
}

// Range [begin, end) of the keys some row of `seg` reads (begin >= end: none).
void segment_range(const Segment& seg, int64_t rows_padded, int64_t& begin, int64_t& end) {
  begin = std::numeric_limits<int64_t>::max();
  end = std::numeric_limits<int64_t>::min();
  for (int64_t r = 0; r < rows_padded; ++r) {
    if (seg.lo[r] >= seg.hi[r]) continue;
    begin = std::min(begin, seg.lo[r]);
    end = std::max(end, seg.hi[r]);
  }
}

// For the tile of keys [j0, j0 + nk): the row intervals relative to it in
// s.lo_rel / s.hi_rel, and the lanes [col_begin, col_end) of the rows with a
// key in it. False when no row has one.
bool tile_rows(const Segment& seg, int64_t rows_padded, int64_t j0, int64_t nk, Scratch& s, int64_t& col_begin,
               int64_t& col_end) {
  constexpr int64_t W = kVecWidth;
  int64_t r_first = rows_padded, r_last = -1;
  for (int64_t r = 0; r < rows_padded; ++r) {
    const int64_t lo = std::clamp<int64_t>(seg.lo[r] - j0, 0, nk), hi = std::clamp<int64_t>(seg.hi[r] - j0, 0, nk);
    s.lo_rel[r] = static_cast<int32_t>(lo);
    s.hi_rel[r] = static_cast<int32_t>(std::max(lo, hi));
    if (lo < hi) {
      r_first = std::min(r_first, r);
      r_last = r;
    }
  }
  if (r_last < 0) return false;
  col_begin = r_first / W * W;
  col_end = round_up(r_last + 1, W);
  return true;
}

// S^T [nk4, Rp] = K · QT over the lanes [col_begin, col_end), keys [j0, j0 + nk) of `keys`.
void tile_scores(const StreamView& keys, KvDType type, int64_t rows_padded, int dim, int64_t j0, int64_t nk,
                 int64_t col_begin, int64_t col_end, Scratch& s) {
  constexpr int64_t W = kVecWidth;
  const int64_t nk4 = round_up(nk, 4);
  gather_rows(keys, type, dim, j0, j0 + nk, s.key_rows.data(), s.key_buf);
  for (int64_t c = nk; c < nk4; ++c) s.key_rows[c] = s.zero_row.data();
  for (int64_t col = col_begin; col < col_end; col += 4 * W) {
    const int vectors = static_cast<int>(std::min<int64_t>(4, (col_end - col) / W));
    for (int64_t c = 0; c < nk4; c += 4) {
      float* const out[4] = {&s.st[(c + 0) * rows_padded + col], &s.st[(c + 1) * rows_padded + col],
                             &s.st[(c + 2) * rows_padded + col], &s.st[(c + 3) * rows_padded + col]};
      tile_4xV(vectors, &s.key_rows[c], 1, s.qt_rows.data(), col, dim, out, false);
    }
  }
}

// Adds the keys of `seg` to `part` for every row of the block.
void accumulate_segment(const Segment& seg, KvDType type, int64_t rows_padded, int dim, int64_t dim_padded,
                        float scale, Scratch& s, RowPartial& part) {
  constexpr int64_t W = kVecWidth;
  int64_t begin, end;
  segment_range(seg, rows_padded, begin, end);
  for (int64_t j0 = begin; j0 < end; j0 += kKeyTile) {
    const int64_t nk = std::min(kKeyTile, end - j0);
    // Rows with a key in this tile, and their intervals relative to it.
    int64_t col_begin, col_end;  // rows on the lanes
    if (!tile_rows(seg, rows_padded, j0, nk, s, col_begin, col_end)) continue;
    // S^T [nk4, Rp] = K · QT over the active row columns.
    tile_scores(seg.keys, type, rows_padded, dim, j0, nk, col_begin, col_end, s);
    gather_rows(seg.values, type, dim, j0, j0 + nk, s.value_rows.data(), s.value_buf);
    if (dim_padded != dim) {
      for (int64_t c = 0; c < nk; ++c) {
        float* dst = s.value_pad.data() + c * dim_padded;
        std::copy_n(s.value_rows[c], dim, dst);
        s.value_rows[c] = dst;
      }
    }
    // Online softmax, W rows per step: mask, tile max, rescale, probabilities.
    for (int64_t r0 = col_begin; r0 < col_end; r0 += W) {
      const vint lo = load_int(&s.lo_rel[r0]), hi = load_int(&s.hi_rel[r0]);
      const vfloat m_old = load(&part.max[r0]);
      vfloat m_tile = splat(kNegInf);
      for (int64_t c = 0; c < nk; ++c) {
        const vint cv = vint{} + static_cast<int32_t>(c);
        vfloat x = load(&s.st[c * rows_padded + r0]) * scale;
        x = (cv >= lo && cv < hi) ? x : splat(kNegInf);
        store(&s.st[c * rows_padded + r0], x);
        m_tile = x > m_tile ? x : m_tile;
      }
      const vfloat m_new = m_tile > m_old ? m_tile : m_old;
      const vfloat none = splat(kNegInf);
      // Rows with no key so far keep m = -inf and corr = 1 (their sum and acc are 0).
      const vfloat corr = m_new == none ? splat(1.0f) : exp_nonpositive(m_old - m_new);
      vfloat total = vfloat{};
      for (int64_t c = 0; c < nk; ++c) {
        const vfloat x = load(&s.st[c * rows_padded + r0]);
        const vfloat p = x == none ? vfloat{} : exp_nonpositive(x - m_new);
        store(&s.st[c * rows_padded + r0], p);
        total += p;
      }
      store(&part.max[r0], m_new);
      store(&part.sum[r0], load(&part.sum[r0]) * corr + total);
      store(&s.corr[r0], corr);
    }
    for (int64_t r = col_begin; r < col_end; ++r) {
      const float corr = s.corr[r];
      if (corr == 1.0f) continue;
      float* acc = &part.acc[r * dim_padded];
      for (int64_t i = 0; i < dim_padded; i += W) store(acc + i, load(acc + i) * corr);
    }
    // O [rows, dp] += P · V, P read from S^T with stride Rp.
    for (int64_t col = 0; col < dim_padded; col += 4 * W) {
      const int vectors = static_cast<int>(std::min<int64_t>(4, (dim_padded - col) / W));
      for (int64_t r = col_begin; r < col_end; r += 4) {
        const float* const p[4] = {&s.st[r], &s.st[r + 1], &s.st[r + 2], &s.st[r + 3]};
        float* const out[4] = {&part.acc[r * dim_padded + col], &part.acc[(r + 1) * dim_padded + col],
                               &part.acc[(r + 2) * dim_padded + col], &part.acc[(r + 3) * dim_padded + col]};
        tile_4xV(vectors, p, rows_padded, s.value_rows.data(), col, nk, out, true);
      }
    }
  }
}

// Second pass for the selection scores: seg.scores[j] += Σ_r exp(s[r, j] - m[r]) · inv[r]
// over the rows whose interval holds j (the caller empties those of unscored rows).
void score_segment(const Segment& seg, KvDType type, int64_t rows_padded, int dim, float scale, Scratch& s) {
  constexpr int64_t W = kVecWidth;
  int64_t begin, end;
  segment_range(seg, rows_padded, begin, end);
  for (int64_t j0 = begin; j0 < end; j0 += kKeyTile) {
    const int64_t nk = std::min(kKeyTile, end - j0);
    int64_t col_begin, col_end;
    if (!tile_rows(seg, rows_padded, j0, nk, s, col_begin, col_end)) continue;
    tile_scores(seg.keys, type, rows_padded, dim, j0, nk, col_begin, col_end, s);
    for (int64_t c = 0; c < nk; ++c) {
      const vint cv = vint{} + static_cast<int32_t>(c);
      vfloat total = vfloat{};
      for (int64_t r0 = col_begin; r0 < col_end; r0 += W) {
        const vint lo = load_int(&s.lo_rel[r0]), hi = load_int(&s.hi_rel[r0]);
        const vfloat x = load(&s.st[c * rows_padded + r0]) * scale - load(&s.row_max[r0]);
        const vfloat p = exp_nonpositive(x) * load(&s.row_inv[r0]);
        total += (cv >= lo && cv < hi) ? p : vfloat{};
      }
      float sum = 0.0f;
      for (int i = 0; i < W; ++i) sum += total[i];
      seg.scores[j0 + c - seg.score_base] += sum;
    }
  }
}

struct BlockContext {
  const AttentionPlan* plan;
  const float* q;
  int b;  // batch entry
  float* out;
};

// Queries [t0, t1) (entry-relative) of KV head h.
void run_block(const BlockContext& ctx, int h, int64_t t0, int64_t t1, Scratch& s, int64_t& distant_parts,
               int64_t& skipped) {
  constexpr int64_t W = kVecWidth;
  const AttentionPlan& plan = *ctx.plan;
  const KvView& view = *plan.view;
  const AttentionBatch& batch = *plan.batch;
  const AttentionParams& params = *plan.params;
  const int b = ctx.b, layer = params.layer;
  const int64_t first_pos = batch.first_pos[b], row0 = batch.row_begin[b];
  const int64_t score_from = batch.score_from != nullptr ? batch.score_from[b] : INT64_MAX;
  const int groups = plan.groups, dim = plan.dim, heads = plan.heads;
  const int64_t rows = (t1 - t0) * groups, rows_padded = round_up(rows, W), dim_padded = round_up(dim, W);
  // Rows at positions >= score_from add to the selection scores of the head's group.
  const int group = plan.distant_group[h];
  const bool scoring = plan.scores != nullptr && group >= 0 && first_pos + t1 > score_from;
  float* const region = scoring ? plan.score_region(b, group) : nullptr;
  const int64_t store_size = group >= 0 ? view.store_size[b * view.num_groups + group] : 0;
  const int64_t window_base = view.window_base[b];
  const int64_t window_score_base = window_base - store_size;  // window scores follow the store slots

  // Buffers for this block's shape.
  s.qt.assign(static_cast<size_t>(dim) * rows_padded, 0.0f);
  s.st.resize(static_cast<size_t>(kKeyTile + 3) * rows_padded);
  s.corr.assign(rows_padded, 1.0f);
  s.lo_rel.resize(rows_padded);
  s.hi_rel.resize(rows_padded);
  s.zero_row.assign(dim, 0.0f);
  s.value_pad.assign(static_cast<size_t>(kKeyTile) * dim_padded, 0.0f);
  s.key_rows.resize(kKeyTile + 3);
  s.value_rows.resize(kKeyTile);
  s.qt_rows.resize(dim);
  for (int i = 0; i < dim; ++i) s.qt_rows[i] = s.qt.data() + static_cast<size_t>(i) * rows_padded;
  s.row_t.assign(rows_padded, -1);
  s.skip.assign(rows_padded, 0);
  for (int64_t t = t0; t < t1; ++t) {
    for (int g = 0; g < groups; ++g) {
      const int64_t r = (t - t0) * groups + g;
      const float* qrow = ctx.q + ((row0 + t) * heads + static_cast<int64_t>(h) * groups + g) * dim;
      for (int i = 0; i < dim; ++i) s.qt[i * rows_padded + r] = qrow[i];
      s.row_t[r] = t;
    }
  }

  const KvRule& krule = plan.key_rule(h);
  const KvRule& vrule = plan.value_rule(h);
  const bool shared = krule.retention == kRetainWindow || krule.retention == kRetainNone;
  const int64_t ns = view.sink_tokens, nr = view.recent_tokens;
  const bool split = plan.split;
  auto sink_end = [&](int64_t pos) { return podkv::sink_end(pos, ns, split); };
  auto recent_begin = [&](int64_t pos) { return podkv::recent_begin(pos, ns, nr, split); };
  auto has_distant = [&](int64_t pos) { return podkv::has_distant(pos, ns, nr, split); };

  // tau: skip flags per row from the anchor's gates, and the stats, per query.
  int64_t rows_with_distant = 0;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t pos = first_pos + t;
    if (!has_distant(pos) || !shared || krule.distant_source < 0) continue;
    distant_parts += groups;
    if (params.tau < 1.0f && plan.all_gates != nullptr) {
      for (int g = 0; g < groups; ++g) {
        const bool skip = plan.gate(krule.distant_source, row0 + t, h * groups + g) >= params.tau;
        s.skip[(t - t0) * groups + g] = skip;
        skipped += skip;
      }
    }
  }

  // Proximal part: sink and recent spans of the proximal streams.
  s.prox.reset(rows_padded, dim_padded);
  {
    const StreamView k = stream_view(view, b, kKeys, source_layer(layer, krule, false), h);
    const StreamView v = stream_view(view, b, kValues, source_layer(layer, vrule, false), h);
    Segment& sink = s.seg[0];
    Segment& recent = s.seg[1];
    sink.keys = recent.keys = k;
    sink.values = recent.values = v;
    recent.scores = region;
    recent.score_base = window_score_base;
    for (Segment* seg : {&sink, &recent}) {
      seg->lo.assign(rows_padded, 0);
      seg->hi.assign(rows_padded, 0);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pos = first_pos + s.row_t[r];
      sink.hi[r] = sink_end(pos);
      recent.lo[r] = recent_begin(pos);
      recent.hi[r] = pos + 1;
    }
    accumulate_segment(sink, view.dtype, rows_padded, dim, dim_padded, params.scale, s, s.prox);
    accumulate_segment(recent, view.dtype, rows_padded, dim, dim_padded, params.scale, s, s.prox);
  }

  // Distant part: rows whose query has distant tokens that are neither masked nor skipped.
  s.dist.reset(rows_padded, dim_padded);
  const int k_layer = source_layer(layer, krule, true);
  const int v_layer = source_layer(layer, vrule, true);
  for (int64_t r = 0; r < rows; ++r) rows_with_distant += has_distant(first_pos + s.row_t[r]) && !s.skip[r];
  const bool distant_read = rows_with_distant > 0 && k_layer >= 0 && v_layer >= 0;
  if (distant_read) {
    const StreamView k = stream_view(view, b, kKeys, k_layer, h);
    const StreamView v = stream_view(view, b, kValues, v_layer, h);
    Segment& store = s.seg[2];
    Segment& window = s.seg[3];
    window.keys = k;
    window.values = v;
    window.scores = region;
    window.score_base = window_score_base;
    store.scores = region;
    store.score_base = 0;
    if (group >= 0) {
      store.keys = stream_view(view, b, kKeyStore, k_layer, h);
      store.values = stream_view(view, b, kValueStore, v_layer, h);
    }
    for (Segment* seg : {&store, &window}) {
      seg->lo.assign(rows_padded, 0);
      seg->hi.assign(rows_padded, 0);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pos = first_pos + s.row_t[r];
      if (!has_distant(pos) || s.skip[r]) continue;
      if (group < 0) {
        window.lo[r] = sink_end(pos);
      } else {
        store.hi[r] = store_size;  // kept tokens that left the window: distant for every query
        window.lo[r] = std::max(sink_end(pos), window_base);
      }
      window.hi[r] = recent_begin(pos);
    }
    if (group >= 0) accumulate_segment(store, view.dtype, rows_padded, dim, dim_padded, params.scale, s, s.dist);
    accumulate_segment(window, view.dtype, rows_padded, dim, dim_padded, params.scale, s, s.dist);
  }

  // Merge the parts per row (as in the per-query kernel) and write out and gates.
  if (scoring) {
    s.row_max.assign(rows_padded, 0.0f);
    s.row_inv.assign(rows_padded, 0.0f);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = s.row_t[r];
    const int g = static_cast<int>(r % groups);
    const float pm = s.prox.max[r], psum = s.prox.sum[r], dm = s.dist.max[r], dsum = s.dist.sum[r];
    const float m = s.skip[r] ? pm : std::max(pm, dm);
    const float wp = psum > 0 ? std::exp(pm - m) : 0.0f;
    const float wd = dsum > 0 && !s.skip[r] ? std::exp(dm - m) : 0.0f;
    const float sp = psum * wp, sd = dsum * wd;
    const float inv = 1.0f / (sp + sd);
    float* o = ctx.out + ((row0 + t) * heads + static_cast<int64_t>(h) * groups + g) * dim;
    const float* ap = &s.prox.acc[r * dim_padded];
    const float* ad = &s.dist.acc[r * dim_padded];
    for (int i = 0; i < dim; ++i) o[i] = (ap[i] * wp + ad[i] * wd) * inv;
    if (plan.gates != nullptr) plan.gates[(row0 + t) * heads + h * groups + g] = sp * inv;
    if (scoring) {
      // p = exp(s - m_part) · w_part · inv = exp(s - m) · inv for either part.
      s.row_max[r] = m;
      s.row_inv[r] = inv;
    }
  }

  // Selection scores: the second pass over the scored spans, for the scored rows only.
  if (!scoring) return;
  for (int64_t r = 0; r < rows; ++r) {
    if (first_pos + s.row_t[r] >= score_from) continue;
    for (int i = 1; i < (distant_read ? 4 : 2); ++i) s.seg[i].hi[r] = s.seg[i].lo[r];
  }
  score_segment(s.seg[1], view.dtype, rows_padded, dim, params.scale, s);
  if (distant_read) {
    if (group >= 0) score_segment(s.seg[2], view.dtype, rows_padded, dim, params.scale, s);
    score_segment(s.seg[3], view.dtype, rows_padded, dim, params.scale, s);
  }
}

}  // namespace

void attention_blocked(const AttentionPlan& plan, const float* q, int b, int64_t t_begin, int64_t t_end, float* out,
                       int64_t& distant_parts, int64_t& skipped) {
  const int64_t block_queries = std::max<int64_t>(1, kBlockRows / plan.groups);
  const int64_t blocks = (t_end - t_begin + block_queries - 1) / block_queries;
  const int64_t tasks = blocks * plan.kv_heads;
  const BlockContext ctx{&plan, q, b, out};
  // Scores are summed per KV head across blocks: one thread per KV head then.
  const AttentionBatch& batch = *plan.batch;
  const bool scoring = plan.scores != nullptr && batch.score_from != nullptr &&
                       batch.first_pos[b] + t_end > batch.score_from[b];
  int64_t parts = 0, skips = 0;
#pragma omp parallel reduction(+ : parts, skips)
  {
    Scratch scratch;
    if (scoring) {
#pragma omp for schedule(dynamic, 1)
      for (int h = 0; h < plan.kv_heads; ++h) {
        for (int64_t b = 0; b < blocks; ++b) {
          const int64_t t0 = t_begin + b * block_queries;
          run_block(ctx, h, t0, std::min(t_end, t0 + block_queries), scratch, parts, skips);
        }
      }
    } else {
      // Later blocks see more keys: hand them out first.
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t b = blocks - 1 - task / plan.kv_heads;
        const int h = static_cast<int>(task % plan.kv_heads);
        const int64_t t0 = t_begin + b * block_queries;
        run_block(ctx, h, t0, std::min(t_end, t0 + block_queries), scratch, parts, skips);
      }
    }
  }
  distant_parts += parts;
  skipped += skips;
}

}  // namespace podkv::detail
