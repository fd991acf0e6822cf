// kv_write and attention through the step's KvView, for every KV policy's
// layout, every entry type, page sizes 1/8/16, MHA/GQA/MQA and several head
// sizes, over a batch that mixes decode steps and prefill chunks at KV lengths
// 1, 54, 97 and 300. Attention's reference is one plain softmax in double per
// query and head over the keys its token classes make visible
// (kv/token_classes.h, pod-method.md), written from the layout's rules. On
// CUDA also the fused split + RoPE + KV write against the launches it replaces.
#include <cmath>
#include <string>

#include "harness.h"
#include "kv_scenario.h"
#include "reference.h"

#if defined(PODKV_HAVE_CUDA)
#include "backend/cuda_backend_ops.h"
#endif

namespace podkv::backend_test {

namespace {

const KvDType kKvTypes[] = {KvDType::F32, KvDType::F16, KvDType::BF16, KvDType::Q8_0};
const char* const kPolicies[] = {"dense", "pod", "streaming", "h2o", "snapkv", "cla", "pod+snapkv"};
const int kPages[] = {1, 8, 16};
// MHA, GQA (3 query heads per KV head), MQA; four layers for PoD's blocks.
const KvGeometry kGeometries[] = {{4, 2, 2, 64}, {4, 2, 6, 64}, {4, 1, 4, 64}};
const int kDims[] = {64, 80, 96, 128, 5};

// Decode at 54 and 300, a prefill chunk of 40 (the blocked kernel) up to 97, and a first token.
std::vector<EntrySpec> mixed_batch() { return {{0, 1, true}, {53, 1, false}, {57, 40, true}, {299, 1, false}}; }

const uint8_t* entry_at(const KvView& v, const std::vector<uint8_t>& pool, int b, int kind, int layer, int head,
                        int64_t i) {
  const int64_t s = v.stream(b, kind, layer, head);
  if (i / v.page_tokens >= v.page_indptr[s + 1] - v.page_indptr[s]) return nullptr;
  const int32_t page = v.page_indices[v.page_indptr[s] + i / v.page_tokens];
  if (page < 0) return nullptr;
  return pool.data() + page * v.page_bytes + (i % v.page_tokens) * v.entry_bytes;
}

// Visits every entry the step's rows write (row r of entry b at its position; layer l, KV head h,
// keys or values) where the layout keeps one: visit(r, l, h, kind, e), e the entry's bytes in
// `pool`, or null when the stream has no page for the position.
template <typename Visit>
void for_each_written_entry(const KvScenario& s, const std::vector<uint8_t>& pool, Visit visit) {
  const KvGeometry& g = s.spec().geometry;
  const KvView& view = s.view();
  for (int b = 0; b < view.num_seqs; ++b)
    for (int64_t r = s.batch().row_begin[b]; r < s.batch().row_begin[b + 1]; ++r)
      for (int l = 0; l < g.layers; ++l)
        for (int h = 0; h < g.kv_heads; ++h)
          for (int kind : {kKeys, kValues}) {
            const StreamRule& rule = kind == kKeys ? s.layout().key_rule(l, h) : s.layout().value_rule(l, h);
            if (rule.retention == Retention::None) continue;
            const int64_t pos = s.batch().first_pos[b] + (r - s.batch().row_begin[b]);
            visit(r, l, h, kind, entry_at(view, pool, b, kind, l, h, pos));
          }
}

void kv_write_case(BackendOps& ops, Reporter& report, const KvCaseSpec& spec, uint64_t seed) {
  KvScenario s(ops, spec, seed);
  const KvGeometry& g = spec.geometry;
  std::mt19937_64 rng(seed + 1);
  // Any floats (not the exact ones): the error is the entry type's rounding.
  std::vector<std::vector<float>> k(g.layers), v(g.layers);
  DeviceBuffer d_k(ops, s.rows() * g.kv_heads * g.dim * sizeof(float)), d_v(ops, d_k.bytes());
  ops.set_step(s.view(), s.batch());
  for (int l = 0; l < g.layers; ++l) {
    k[l] = normal_floats(rng, s.rows() * g.kv_heads * g.dim);
    v[l] = normal_floats(rng, k[l].size());
    d_k.upload(k[l].data(), d_k.bytes());
    d_v.upload(v[l].data(), d_v.bytes());
    ops.kv_write(l, d_k.as<float>(), d_v.as<float>());
  }
  const std::vector<uint8_t> pool = s.download_pool();
  std::vector<double> got, ref;
  std::string note;
  for_each_written_entry(s, pool, [&](int64_t r, int l, int h, int kind, const uint8_t* e) {
    if (e == nullptr) {
      note = "no page for a written position";
      return;
    }
    const std::vector<double> x = kv_entry_values(spec.dtype, e, g.dim);
    const float* want = (kind == kKeys ? k[l] : v[l]).data() + (r * g.kv_heads + h) * g.dim;
    got.insert(got.end(), x.begin(), x.end());
    ref.insert(ref.end(), want, want + g.dim);
  });
  // Rounding bounds relative to the largest value: half an ulp (f16 2^-11, bf16 2^-8), q8_0 half a step of max/127.
  const double tol = spec.dtype == KvDType::F32 ? 0.0 : spec.dtype == KvDType::F16 ? 4.9e-4
                     : spec.dtype == KvDType::BF16 ? 3.91e-3 : 4.0e-3;
  report.result("kv_write", spec.describe(), ops.name(), max_rel_err(got.data(), ref.data(), got.size()), tol, note);
}

#if defined(PODKV_HAVE_CUDA)
// What one pass of the stacked projection through the step leaves: q, k, v of every layer and the
// bytes of the step's rows' entries.
struct QkvPass {
  std::vector<float> qkv_out;  // per layer: q | k | v of every row
  std::vector<uint8_t> entries;
};

// How the pass runs: split_qkv_rope then kv_write; split_qkv_rope_kv_write; its prompt form (Q in
// bf16, scaled by kPromptQScale, in place of q, k and v in float32), from qkv in float32 or in bf16;
// Qwen3's q and k norms by head_rms_norm, then split_qkv_rope and kv_write (kTwoNorms), or inside
// split_qkv_rope_kv_write (kFusedNorms). With bf16_values the random q | k | v are rounded to bf16
// first (every pass of a comparison of the bf16 input must see the same values).
enum class QkvLaunch { kTwo, kFused, kPrompt, kPromptBf16In, kTwoNorms, kFusedNorms };
constexpr float kPromptQScale = 0.12751743f;  // 1 / sqrt(128) * log2(e), as a float

QkvPass qkv_pass(CudaBackendOps& ops, const KvCaseSpec& spec, uint64_t seed, bool interleaved, QkvLaunch how,
                 bool bf16_values = false) {
  KvScenario s(ops, spec, seed);  // the same seed: the same history, pages and selection
  const KvGeometry& g = spec.geometry;
  const int64_t rows = s.rows(), nq = int64_t{g.heads} * g.dim, nkv = int64_t{g.kv_heads} * g.dim;
  std::mt19937_64 rng(seed + 1);
  std::vector<int64_t> positions(static_cast<size_t>(rows));
  for (int b = 0; b < s.view().num_seqs; ++b)
    for (int64_t r = s.batch().row_begin[b]; r < s.batch().row_begin[b + 1]; ++r)
      positions[r] = s.batch().first_pos[b] + (r - s.batch().row_begin[b]);
  std::vector<float> inv_freq(static_cast<size_t>(g.dim / 2));
  for (int i = 0; i < g.dim / 2; ++i) inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / g.dim));
  DeviceBuffer d_pos = to_device(ops, positions), d_freq = to_device(ops, inv_freq);
  DeviceBuffer d_qkv(ops, rows * (nq + 2 * nkv) * sizeof(float)), d_q(ops, rows * nq * sizeof(float));
  DeviceBuffer d_k(ops, rows * nkv * sizeof(float)), d_v(ops, d_k.bytes());
  // The norms' weights, away from 1 (with norms only).
  const bool norms = how == QkvLaunch::kTwoNorms || how == QkvLaunch::kFusedNorms;
  const double eps = 1e-6;
  std::mt19937_64 weight_rng(seed + 2);
  DeviceBuffer d_wq = to_device(ops, normal_floats(weight_rng, g.dim));
  DeviceBuffer d_wk = to_device(ops, normal_floats(weight_rng, g.dim));
  ops.set_step(s.view(), s.batch());
  QkvPass out;
  for (int l = 0; l < g.layers; ++l) {
    std::vector<float> qkv = normal_floats(rng, rows * (nq + 2 * nkv));
    if (bf16_values || how == QkvLaunch::kPromptBf16In)
      for (float& x : qkv) x = bf16_to_f32(f32_to_bf16(x));
    if (how == QkvLaunch::kPromptBf16In) {
      std::vector<uint16_t> bits(qkv.size());
      for (size_t i = 0; i < qkv.size(); ++i) bits[i] = f32_to_bf16(qkv[i]);
      d_qkv.upload(bits.data(), bits.size() * sizeof(uint16_t));
    } else {
      d_qkv.upload(qkv.data(), d_qkv.bytes());
    }
    if (how == QkvLaunch::kPrompt || how == QkvLaunch::kPromptBf16In) {
      ops.split_qkv_rope_kv_write(l, d_qkv.as<float>(), rows, g.heads, g.kv_heads, g.dim, d_pos.as<int64_t>(),
                                  d_freq.as<float>(), interleaved, d_q.as<float>(), d_k.as<float>(), d_v.as<float>(),
                                  d_q.as<uint16_t>(), kPromptQScale, how == QkvLaunch::kPromptBf16In);
      // Q as the prefill kernels take it: bf16 bits, here widened to float32 (exact).
      for (const uint16_t h : to_host<uint16_t>(d_q, rows * nq)) out.qkv_out.push_back(bf16_to_f32(h));
      continue;
    }
    if (how == QkvLaunch::kTwoNorms)
      ops.head_rms_norm(d_qkv.as<float>(), rows, g.heads, g.kv_heads, g.dim, d_wq.as<float>(), d_wk.as<float>(), eps);
    if (how == QkvLaunch::kFused || how == QkvLaunch::kFusedNorms) {
      ops.split_qkv_rope_kv_write(l, d_qkv.as<float>(), rows, g.heads, g.kv_heads, g.dim, d_pos.as<int64_t>(),
                                  d_freq.as<float>(), interleaved, d_q.as<float>(), d_k.as<float>(), d_v.as<float>(),
                                  nullptr, 1.0f, false, norms ? d_wq.as<float>() : nullptr,
                                  norms ? d_wk.as<float>() : nullptr, eps);
    } else {
      ops.split_qkv_rope(d_qkv.as<float>(), rows, g.heads, g.kv_heads, g.dim, d_pos.as<int64_t>(), d_freq.as<float>(),
                         interleaved, d_q.as<float>(), d_k.as<float>(), d_v.as<float>());
      ops.kv_write(l, d_k.as<float>(), d_v.as<float>());
    }
    for (const DeviceBuffer* buf : {&d_q, &d_k, &d_v}) {
      const std::vector<float> x = to_host<float>(*buf, buf->bytes() / sizeof(float));
      out.qkv_out.insert(out.qkv_out.end(), x.begin(), x.end());
    }
  }
  const std::vector<uint8_t> pool = s.download_pool();
  const int64_t entry_bytes = s.view().entry_bytes;
  for_each_written_entry(s, pool, [&](int64_t, int, int, int, const uint8_t* e) {
    if (e != nullptr) out.entries.insert(out.entries.end(), e, e + entry_bytes);
  });
  return out;
}

// CudaBackend's one-launch split + RoPE + KV write against the two launches it replaces (each
// checked against the references above): the same q, k, v and entry bytes, exactly. Its prompt form
// too: the same entry bytes, and Q equal to bf16(q * kPromptQScale) of the two launches' q (float32
// product, rounded to nearest even), exactly; from qkv in bf16 the same against the two launches on
// those values.
void split_qkv_rope_kv_write_case(CudaBackendOps& ops, Reporter& report, const KvCaseSpec& spec, uint64_t seed) {
  const bool interleaved = seed % 2 == 1;
  const QkvPass two_f32 = qkv_pass(ops, spec, seed, interleaved, QkvLaunch::kTwo);
  const QkvPass two_bf16 = qkv_pass(ops, spec, seed, interleaved, QkvLaunch::kTwo, true);
  const std::string il = interleaved ? " il" : "";
  for (const QkvLaunch how : {QkvLaunch::kFused, QkvLaunch::kPrompt, QkvLaunch::kPromptBf16In}) {
    const QkvPass one = qkv_pass(ops, spec, seed, interleaved, how);
    const QkvPass& two = how == QkvLaunch::kPromptBf16In ? two_bf16 : two_f32;
    std::vector<float> want = two.qkv_out;
    if (how != QkvLaunch::kFused) {
      // Per layer the two launches left q | k | v; the prompt form q alone, in bf16.
      const KvGeometry& g = spec.geometry;
      const size_t per_layer = want.size() / g.layers, nq = per_layer * g.heads / (g.heads + 2 * g.kv_heads);
      want.clear();
      for (int l = 0; l < g.layers; ++l)
        for (size_t i = 0; i < nq; ++i) {
          const float q = two.qkv_out[l * per_layer + i];
          want.push_back(bf16_to_f32(f32_to_bf16(q * kPromptQScale)));
        }
    }
    std::string note;
    if (one.entries.empty()) note = "no entries written";
    if (one.entries != two.entries) note = "entry bytes differ";
    const double err =
        one.qkv_out.size() == want.size() ? max_rel_err(one.qkv_out.data(), want.data(), want.size()) : 1.0;
    const char* what = how == QkvLaunch::kFused    ? " fused rope"
                       : how == QkvLaunch::kPrompt ? " fused rope, bf16 q"
                                                   : " fused rope, bf16 qkv and q";
    report.result("kv_write", spec.describe() + what + il, ops.name(), err, 0.0, note);
  }
  // Qwen3's q and k norms inside the launch against head_rms_norm's launch before the two launches
  // (head_rms_norm: CudaFusedOps.HeadRmsNormMatchesCpuNormPerHead): the same bits.
  if (spec.geometry.dim <= 128) {
    const QkvPass two = qkv_pass(ops, spec, seed, interleaved, QkvLaunch::kTwoNorms);
    const QkvPass one = qkv_pass(ops, spec, seed, interleaved, QkvLaunch::kFusedNorms);
    std::string note;
    if (one.entries.empty()) note = "no entries written";
    if (one.entries != two.entries) note = "entry bytes differ";
    if (one.qkv_out == two_f32.qkv_out) note = "the norms changed nothing";
    const double err = one.qkv_out.size() == two.qkv_out.size()
                           ? max_rel_err(one.qkv_out.data(), two.qkv_out.data(), two.qkv_out.size())
                           : 1.0;
    report.result("kv_write", spec.describe() + " fused rope, q and k norms" + il, ops.name(), err, 0.0, note);
  }
}
#endif

// The reference's view of the layout's rules for layer l, KV head h.
struct HeadRules {
  StreamRule key, value;
  int distant_group = -1;  // selection group whose kept tokens serve the distant keys, -1 = all of them
  bool shares_distant = false;  // distant keys from another layer (PoD non-anchor): tau may skip them
};

HeadRules head_rules(const KvLayout& layout, int l, int h) {
  HeadRules r{layout.key_rule(l, h), layout.value_rule(l, h)};
  const bool window_or_none = r.key.retention == Retention::Window || r.key.retention == Retention::None;
  if (r.key.retention == Retention::Selected) r.distant_group = r.key.selection_group;
  if (window_or_none && r.key.distant_source >= 0) {
    r.shares_distant = true;
    const StreamRule& src = layout.key_rule(r.key.distant_source, h);
    if (src.retention == Retention::Selected) r.distant_group = src.selection_group;
  }
  return r;
}

// The layer a key or value of a class is read from (-1: masked).
int source(int layer, const StreamRule& rule, bool proximal) {
  const bool window_or_none = rule.retention == Retention::Window || rule.retention == Retention::None;
  if (!proximal && window_or_none) return rule.distant_source;
  if (proximal && rule.retention == Retention::None) return rule.proximal_source;
  return layer;
}

// Store slot of each kept position of entry b's group `grp`, found by matching
// the store's keys with the keys written (exact values, so equality is safe).
std::map<int64_t, int64_t> store_slots(const KvScenario& s, const std::vector<uint8_t>& pool, int b, int grp) {
  std::map<int64_t, int64_t> slots;
  const KvLayout& layout = s.layout();
  const KvView& v = s.view();
  for (int l = 0; l < layout.num_layers; ++l)
    for (int h = 0; h < layout.num_kv_heads; ++h) {
      const StreamRule& rule = layout.key_rule(l, h);
      if (rule.retention != Retention::Selected || rule.selection_group != grp) continue;
      for (int64_t slot = 0; slot < v.store_size[b * v.num_groups + grp]; ++slot) {
        const uint8_t* e = entry_at(v, pool, b, kKeyStore, l, h, slot);
        if (e == nullptr) continue;
        const std::vector<double> x = kv_entry_values(v.dtype, e, v.head_dim);
        for (int64_t pos : s.kept(b, grp))
          if (std::equal(x.begin(), x.end(), s.key(b, l, h, pos))) slots[pos] = slot;
      }
      return slots;
    }
  return slots;
}

void attention_case(BackendOps& ops, Reporter& report, const KvCaseSpec& spec, uint64_t seed) {
  KvScenario s(ops, spec, seed);
  const KvGeometry& g = spec.geometry;
  const KvLayout& layout = s.layout();
  const KvView& view = s.view();
  const AttentionBatch& batch = s.batch();
  const int L = g.layers, H = g.heads, groups = g.heads / g.kv_heads, d = g.dim;
  const int64_t R = s.rows(), ns = layout.sink_tokens, nr = layout.recent_tokens;
  const bool split = nr > 0;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::mt19937_64 rng(seed + 2);

  // The backend: every layer in order, one gates buffer (anchors' gates are read for tau).
  std::vector<std::vector<float>> q(L), out(L);
  DeviceBuffer d_q(ops, R * H * d * sizeof(float)), d_out(ops, d_q.bytes());
  DeviceBuffer d_k(ops, R * g.kv_heads * d * sizeof(float)), d_v(ops, d_k.bytes());
  DeviceBuffer d_gates(ops, L * R * H * sizeof(float));
  DeviceBuffer d_scores = to_device(ops, std::vector<float>(std::max<int64_t>(s.score_count(), 1), 0.0f));
  AttentionStats stats;
  ops.set_step(view, batch);
  for (int l = 0; l < L; ++l) {
    q[l] = normal_floats(rng, R * H * d);
    d_k.upload(s.step_rows(true, l).data(), d_k.bytes());
    d_v.upload(s.step_rows(false, l).data(), d_v.bytes());
    ops.kv_write(l, d_k.as<float>(), d_v.as<float>());
    d_q.upload(q[l].data(), d_q.bytes());
    AttentionParams params;
    params.layer = l;
    params.num_heads = H;
    params.scale = static_cast<float>(scale);
    params.tau = spec.tau;
    AttentionOutputs outputs;
    outputs.out = d_out.as<float>();
    outputs.gates = spec.gates || spec.tau < 1.0f ? d_gates.as<float>() : nullptr;
    outputs.scores = s.score_count() > 0 ? d_scores.as<float>() : nullptr;
    outputs.stats = &stats;
    ops.attention(params, d_q.as<float>(), outputs);
    out[l] = to_host<float>(d_out, R * H * d);
  }
  const std::vector<float> gates = to_host<float>(d_gates, L * R * H);
  const std::vector<float> scores = to_host<float>(d_scores, s.score_count());

  // The reference.
  const std::vector<uint8_t> pool = s.download_pool();
  const int G = layout.num_selection_groups;
  std::vector<std::vector<std::map<int64_t, int64_t>>> slots(batch.num_seqs, std::vector<std::map<int64_t, int64_t>>(G));
  std::string note;
  for (int b = 0; b < batch.num_seqs; ++b)
    for (int grp = 0; grp < G; ++grp) {
      slots[b][grp] = store_slots(s, pool, b, grp);
      if (slots[b][grp].size() != s.kept(b, grp).size()) note = "a kept key is missing from its store";
    }
  std::vector<double> ref_gates(L * R * H, 1.0), ref_scores(s.score_count(), 0.0);
  AttentionStats ref_stats;
  double out_err = 0;
  std::vector<double> logits, ref_out(R * H * d);
  std::vector<int64_t> used;
  for (int l = 0; l < L; ++l) {
    for (int b = 0; b < batch.num_seqs; ++b) {
      const int64_t window_base = view.window_base[b];
      for (int64_t r = batch.row_begin[b]; r < batch.row_begin[b + 1]; ++r) {
        const int64_t pos = batch.first_pos[b] + (r - batch.row_begin[b]);
        for (int i = 0; i < H; ++i) {
          const int h = i / groups;
          const HeadRules rules = head_rules(layout, l, h);
          const bool has_distant = split && pos - nr + 1 > ns;
          bool skip = false;
          if (has_distant && rules.shares_distant) {
            ++ref_stats.distant_parts;
            // The backend's own gate of the anchor decides (its gates are checked against ref_gates
            // below): with bf16 tensor cores a gate within their rounding of tau may fall either way.
            skip = spec.tau < 1.0f && gates[(rules.key.distant_source * R + r) * H + i] >= spec.tau;
            ref_stats.skipped_distant_parts += skip;
          }
          logits.clear();
          used.clear();
          for (int64_t j = 0; j <= pos; ++j) {
            const bool proximal = !split || j < ns || j > pos - nr;
            const int kl = source(l, rules.key, proximal), vl = source(l, rules.value, proximal);
            if ((!proximal && skip) || kl < 0 || vl < 0) continue;
            if (!proximal && rules.distant_group >= 0 && j < window_base && !s.kept(b, rules.distant_group).count(j))
              continue;
            double dot = 0;
            const float* key = s.key(b, kl, h, j);
            for (int x = 0; x < d; ++x) dot += static_cast<double>(q[l][(r * H + i) * d + x]) * key[x];
            logits.push_back(dot * scale);
            used.push_back(j);
          }
          const double m = *std::max_element(logits.begin(), logits.end());
          double total = 0, proximal_mass = 0;
          for (double& p : logits) total += (p = std::exp(p - m));
          double* o = &ref_out[(r * H + i) * d];
          std::fill_n(o, d, 0.0);
          const bool scored = G > 0 && rules.distant_group >= 0 && pos >= batch.score_from[b];
          for (size_t c = 0; c < used.size(); ++c) {
            const int64_t j = used[c];
            const double p = logits[c] / total;
            const bool proximal = !split || j < ns || j > pos - nr;
            if (proximal) proximal_mass += p;
            const float* value = s.value(b, source(l, rules.value, proximal), h, j);
            for (int x = 0; x < d; ++x) o[x] += p * value[x];
            if (scored && j >= ns) {
              // Region of (b, group): store slots, then positions from window_base on.
              const int grp = rules.distant_group;
              const int64_t store = view.store_size[b * G + grp];
              const int64_t at = j >= window_base ? store + j - window_base : slots[b][grp].count(j) ? slots[b][grp][j] : -1;
              if (at >= 0) ref_scores[view.score_indptr[b * G + grp] + at] += p;
            }
          }
          ref_gates[(l * R + r) * H + i] = proximal_mass;
        }
      }
    }
    out_err = std::max(out_err, max_rel_err(out[l].data(), ref_out.data(), ref_out.size()));
  }
  const double gate_err =
      spec.gates || spec.tau < 1.0f ? max_rel_err(gates.data(), ref_gates.data(), gates.size()) : 0.0;
  const double score_err = max_rel_err(scores.data(), ref_scores.data(), scores.size());
  if (stats.distant_parts != ref_stats.distant_parts || stats.skipped_distant_parts != ref_stats.skipped_distant_parts)
    note = "stats " + std::to_string(stats.skipped_distant_parts) + "/" + std::to_string(stats.distant_parts) +
           " skipped, want " + std::to_string(ref_stats.skipped_distant_parts) + "/" +
           std::to_string(ref_stats.distant_parts);
  // The CUDA backend's tiled prefill kernel (bf16 entries, chunks of 16+ rows, no selection) runs on
  // the tensor cores with the queries and probabilities rounded to bf16 (2^-9 relative each).
  const bool tensor_cores = ops.name() == "cuda" && spec.dtype == KvDType::BF16;
  report.result("attention", spec.describe(), ops.name(), std::max({out_err, gate_err, score_err}),
                tensor_cores ? 1e-2 : 2e-5, note);
}

// Every policy with every entry type; every head size with MHA, GQA and MQA;
// PoD's tau skipping.
std::vector<KvCaseSpec> kv_case_specs() {
  std::vector<KvCaseSpec> specs;
  int i = 0;
  for (const char* policy : kPolicies)
    for (KvDType dtype : kKvTypes) {
      KvCaseSpec c{policy, dtype, kPages[i % 3], kGeometries[(i / 3) % 3], mixed_batch()};
      c.geometry.dim = kDims[i % 5];
      specs.push_back(c);
      ++i;
    }
  for (int dim : kDims)
    for (const KvGeometry& geo : kGeometries) {
      KvCaseSpec c{kPolicies[i % 7], kKvTypes[i % 4], kPages[(i + 1) % 3], geo, mixed_batch()};
      c.geometry.dim = dim;
      specs.push_back(c);
      ++i;
    }
  for (auto [policy, dtype] : {std::pair{"pod", KvDType::F32}, {"pod", KvDType::Q8_0}, {"pod+snapkv", KvDType::BF16}}) {
    KvCaseSpec c{policy, dtype, 8, kGeometries[1], mixed_batch()};
    c.tau = 0.5f;
    specs.push_back(c);
  }
  // Decode at the lengths where split-KV kernels cut the keys into chunks: kv lengths 1, 17, 100,
  // 1000 and 4097 in one batch; pages 1/16/64; GQA ratios 1, 4, 8 and MQA with 16 query heads.
  const std::vector<EntrySpec> long_batch = {{0, 1, false}, {16, 1, false}, {99, 1, false}, {999, 1, false},
                                             {4096, 1, false}};
  const KvGeometry long_geometries[] = {{4, 2, 2, 128}, {4, 2, 8, 128}, {4, 2, 16, 64}, {4, 1, 16, 128}};
  const int long_pages[] = {1, 16, 64};
  int j = 0;
  for (const char* policy : {"dense", "pod", "streaming", "cla", "h2o", "pod+snapkv"})
    for (const KvGeometry& geo : long_geometries) {
      KvCaseSpec c{policy, kKvTypes[j % 4], long_pages[j % 3], geo, long_batch};
      if (j % 5 == 4 && std::string(policy) == "pod") c.tau = 0.5f;
      specs.push_back(c);
      ++j;
    }
  // Prefill chunks long enough that the tiled kernels meet whole 64-key tiles inside the causal
  // edge, of one token class (a prompt of 100 rows from position 0, ending in a partial 32-row
  // tile; 200 rows after 130 committed): bf16 entries, the shared kernel's groupings (4 query
  // heads per KV head, one or two KV heads, head_dim 128 and 64: on a Hopper GPU the wgmma kernel
  // takes those of head_dim 128) and the per-warp kernel's (3 per KV head), every geometry at
  // every page size. Then with
  // a sink of 64 and a window of 128, so that whole tiles also lie in the sink and in the window,
  // and a prompt of 120 rows whose last 32-row tile is 24 rows (its second half partly filled).
  // Every other case without tau asks for no gates, as the CUDA backend's steps without tau do.
  const std::vector<EntrySpec> prompt_batch = {{0, 100, true}, {130, 200, true}, {40, 1, false}};
  const KvGeometry prompt_geometries[] = {{4, 2, 8, 128}, {4, 1, 4, 64}, {4, 2, 6, 64}, {4, 1, 4, 128}, {4, 2, 8, 64}};
  int k = 0;
  for (const char* policy : {"dense", "pod", "streaming", "cla"})
    for (const KvGeometry& geo : prompt_geometries) {
      KvCaseSpec c{policy, KvDType::BF16, long_pages[(k + k / 3) % 3], geo, prompt_batch};
      if (k % 2 == 1 && std::string(policy) == "pod") c.tau = 0.5f;
      c.gates = k % 2 == 1;
      specs.push_back(c);
      ++k;
    }
  const std::vector<EntrySpec> window_batch = {{0, 120, true}, {300, 220, true}, {500, 1, false}};
  for (const char* policy : {"pod", "streaming"})
    for (const KvGeometry& geo : {prompt_geometries[0], prompt_geometries[2]}) {
      KvCaseSpec c{policy, KvDType::BF16, long_pages[k % 3], geo, window_batch};
      c.sink_tokens = 64, c.recent_tokens = 128;
      if (k % 2 == 0 && std::string(policy) == "pod") c.tau = 0.5f;
      c.gates = k % 2 == 1;
      specs.push_back(c);
      ++k;
    }
  // Decode of bf16 entries at every head size the tensor-core decode kernel takes (32, 64, 96, 128;
  // the long batch above has 64 only in bf16): kv lengths 1 to 4097 at head_dim 128 (64 chunks of a
  // row's keys at the most), 1 to 1000 at 96 and 32 (16), pages of 64 and 16 tokens (16-key tiles
  // inside one page and across two), GQA ratio 4, dense and PoD (distant keys from the anchor, a
  // window that starts inside a page), one PoD case with tau. Last in the list: the earlier cases
  // keep their seeds.
  const std::vector<EntrySpec> shorter_batch(long_batch.begin(), long_batch.end() - 1);
  int m = 0;
  for (int dim : {128, 96, 32})
    for (const char* policy : {"dense", "pod"}) {
      KvCaseSpec c{policy, KvDType::BF16, m % 2 == 0 ? 64 : 16, KvGeometry{4, 2, 8, dim},
                   dim == 128 ? long_batch : shorter_batch};
      if (m == 3) c.tau = 0.5f;
      specs.push_back(c);
      ++m;
    }
  return specs;
}

}  // namespace

void run_kv_cases(BackendOps& ops, Reporter& report) {
  const std::vector<KvCaseSpec> specs = kv_case_specs();
  uint64_t seed = 1000;
  if (report.wants("kv_write"))
    for (size_t i = 0; i < specs.size() && i < 28; ++i) kv_write_case(ops, report, specs[i], seed++);
#if defined(PODKV_HAVE_CUDA)
  if (auto* cuda = dynamic_cast<CudaBackendOps*>(&ops); cuda != nullptr && report.wants("kv_write"))
    for (size_t i = 0; i < specs.size() && i < 28; ++i)
      if (specs[i].geometry.dim % 2 == 0) split_qkv_rope_kv_write_case(*cuda, report, specs[i], seed++);
#endif
  if (report.wants("attention"))
    for (const KvCaseSpec& spec : specs) attention_case(ops, report, spec, seed++);
}

}  // namespace podkv::backend_test
