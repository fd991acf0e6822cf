// The host side of a forward pass: for a batch step it checks the input,
// reserves every sequence's pages all or nothing, builds the plain KV view,
// runs the backend, hands the selection scores back to the cache, and
// commits. Sequences live in the cache: add -> prefill in one or more chunks
// (interleaved with other sequences' decode steps) -> end_prefill (SnapKV and
// PoD+SnapKV select here) -> decode steps -> remove (every page back).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "backend/backend.h"
#include "engine/batch.h"
#include "kv/kv_cache.h"
#include "kv/kv_view_builder.h"
#include "model/model.h"
#include "sampling/sampler.h"

namespace podkv {

class Runner {
 public:
  // On the CPU backend. The cache's layout must match the model (layers, KV heads, head_dim).
  Runner(const Model& model, KvCache& cache);
  // On `backend`, which must outlive the runner.
  Runner(Backend& backend, KvCache& cache);
  ~Runner();

  // PoD skipping threshold (absent = never skip).
  void set_tau(std::optional<float> tau) { tau_ = tau; }
  // Longest chunk forward() cuts a prefill into (memory of the activations is O(chunk)).
  void set_chunk_size(int64_t tokens);
  int64_t chunk_size() const { return chunk_size_; }
  void set_layer_observer(LayerObserver observer) { backend_->set_layer_observer(std::move(observer)); }

  int add_sequence() { return cache_.add_sequence(); }
  void remove_sequence(int seq) { cache_.remove_sequence(seq); }
  void end_prefill(int seq) { cache_.end_prefill(seq); }

  // Runs one batch step. Throws KvCacheFull (and changes nothing) when the
  // pages of all entries together do not fit, Error on bad input (a token
  // outside the vocabulary, a sequence past max_position_embeddings, a
  // sequence twice in one batch).
  void step(const Batch& batch, BatchResult& result);

  // One sequence alone: appends `tokens` and runs them in chunks. logits gets
  // [n, vocab] when all_logits, else [vocab] for the last token. The first
  // call of a sequence is its prefill (SnapKV selects at its end). Checks the
  // whole request's peak pages first, so a refusal changes nothing.
  void forward(int seq, const std::vector<int32_t>& tokens, bool all_logits, std::vector<float>& logits);

  const AttentionStats& stats() const { return stats_; }
  const Model& model() const { return backend_->model(); }
  KvCache& cache() { return cache_; }
  Backend& backend() { return *backend_; }

 private:
  std::unique_ptr<Backend> owned_backend_;
  Backend* backend_;
  KvCache& cache_;
  std::unique_ptr<KvPool> pool_;
  std::optional<float> tau_;
  int64_t chunk_size_ = 256;
  AttentionStats stats_;
  KvViewBuilder view_builder_;
  ForwardOutput output_;
  // Step arrays, reused.
  std::vector<int> seqs_;
  std::vector<int64_t> new_lengths_, row_begin_, first_pos_, score_from_, positions_, logit_rows_;
  std::vector<int32_t> tokens_;
  std::vector<const SampleRequest*> samples_;  // [logit rows]
  LogitSampler host_sampler_;
};

}  // namespace podkv
