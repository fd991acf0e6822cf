// A KV cache in a given state on a backend, for the kv_write and attention
// cases: the layout of one KV policy (policy/policies.h) over a small geometry,
// the backend's pool, and one sequence per batch entry grown to its history
// through the backend's kv_write (exact values, random selection scores,
// SnapKV's end of prefill for the entries that decode); then the step's
// pages reserved and its view built. The host keeps every key and value it
// wrote, so references need nothing from the cache but its bookkeeping
// (which distant tokens a selection group still keeps).
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "harness.h"
#include "kv/kv_view_builder.h"
#include "policy/policies.h"

namespace podkv::backend_test {

struct KvGeometry {
  int layers = 4, kv_heads = 2, heads = 4, dim = 64;
};

// One batch entry: a sequence of `history` committed tokens that gets `tokens` more.
struct EntrySpec {
  int64_t history = 0, tokens = 1;
  bool prefill = false;  // the new tokens are part of its prompt (SnapKV has not selected yet)
};

struct KvCaseSpec {
  std::string policy = "dense";
  KvDType dtype = KvDType::F32;
  int page_tokens = 16;
  KvGeometry geometry;
  std::vector<EntrySpec> entries;
  float tau = 1.0f;
  // Whether the attention op is asked for the gates (PoD's proximal mass per row and head). With tau
  // at 1 nothing reads them, and the CUDA backend asks for none (kernels may then skip their
  // proximal / distant split); a case with tau < 1 always asks.
  bool gates = true;
  int sink_tokens = 4, recent_tokens = 24;  // the token classes' bounds (PoD, StreamingLLM, H2O, SnapKV)
  std::string describe() const;
};

// Policy settings of every case: small enough that the lengths of the cases
// cross every token class (sink 4 and window 24 unless the case says otherwise,
// budget 16, observation window 8).
KvPolicyOptions case_policy_options(const KvCaseSpec& spec);

class KvScenario {
 public:
  KvScenario(BackendOps& ops, const KvCaseSpec& spec, uint64_t seed);

  const KvCaseSpec& spec() const { return spec_; }
  const KvLayout& layout() const { return cache_->layout(); }
  const KvView& view() const { return view_builder_.view(); }
  const AttentionBatch& batch() const { return batch_; }
  int64_t rows() const { return row_begin_.back(); }
  int64_t score_count() const { return view_builder_.score_count(); }

  // Host copy of what was written for entry b: [layer][kv_head][position][dim],
  // positions up to the step's new length (the step's own rows included).
  const float* key(int b, int layer, int head, int64_t pos) const { return &keys_[b][index(b, layer, head, pos)]; }
  const float* value(int b, int layer, int head, int64_t pos) const { return &values_[b][index(b, layer, head, pos)]; }
  // The step's rows of `layer` as kv_write takes them: [rows, H_kv * dim].
  std::vector<float> step_rows(bool keys, int layer) const;
  // Distant positions group g of entry b keeps in its store (before the step).
  const std::set<int64_t>& kept(int b, int g) const { return kept_[b][g]; }
  // The pool's bytes, up to the highest page the step's view refers to.
  std::vector<uint8_t> download_pool() const;

 private:
  size_t index(int b, int layer, int head, int64_t pos) const {
    const int64_t len = new_lengths_[b];
    return ((static_cast<size_t>(layer) * spec_.geometry.kv_heads + head) * len + pos) * spec_.geometry.dim;
  }
  void grow(int b, int64_t to);

  BackendOps& ops_;
  KvCaseSpec spec_;
  std::mt19937_64 rng_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<KvPool> pool_;
  KvViewBuilder view_builder_;
  std::vector<int> seqs_;
  std::vector<int64_t> new_lengths_, row_begin_, first_pos_, score_from_;
  AttentionBatch batch_;
  std::vector<std::vector<float>> keys_, values_;
  std::vector<std::vector<std::set<int64_t>>> kept_;  // [entry][group]
};

}  // namespace podkv::backend_test
