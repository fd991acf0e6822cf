// The forward pass of a Llama-family model on the CPU, over a paged KV cache.
//
// Per layer, for a chunk of T tokens at positions n .. n+T-1 of one sequence:
//   x̂ = rms_norm(x)                         x: [T, hidden]
//   q = x̂ Wqᵀ (+bq) [T, H·d], k, v = x̂ Wk/vᵀ (+b) [T, H_kv·d]; RoPE on q, k
//   k, v -> cache; o = attention(q, cache) [T, H·d]; x += o Woᵀ
//   x += (silu(x̂' Wgᵀ) ⊙ x̂' Wuᵀ) Wdᵀ        with x̂' = rms_norm(x)
// then logits = rms_norm(x) · lm_headᵀ [T or 1, vocab].
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "kv/kv_cache.h"
#include "model/model.h"
#include "ops/attention.h"

namespace podkv {

class Runner {
 public:
  // The cache's layout must match the model (layers, KV heads, head_dim).
  Runner(const Model& model, KvCache& cache);

  // PoD skipping threshold (absent = never skip).
  void set_tau(std::optional<float> tau) { tau_ = tau; }
  // Longest chunk a prefill is cut into (memory of the activations is O(chunk)).
  void set_chunk_size(int64_t tokens) { chunk_size_ = tokens; }

  // Called once per layer and chunk, right after that layer's attention, with
  // the chunk's queries q [tokens, H * d] (RoPE applied) at positions
  // first_pos .. first_pos + tokens - 1; the layer's keys and values of those
  // positions are in the cache. For tools that inspect attention (analyze).
  using LayerObserver = std::function<void(int seq, int layer, const float* q, int64_t first_pos, int64_t tokens)>;
  void set_layer_observer(LayerObserver observer) { observer_ = std::move(observer); }

  // Appends `tokens` to sequence `seq` and runs them. logits gets [n, vocab]
  // when all_logits, else [vocab] for the last token. Throws KvCacheFull (and
  // changes nothing) when the cache cannot hold them, Error when the sequence
  // would pass the model's max_position_embeddings.
  void forward(int seq, const std::vector<int32_t>& tokens, bool all_logits, std::vector<float>& logits);

  const AttentionStats& stats() const { return stats_; }
  const Model& model() const { return model_; }
  KvCache& cache() { return cache_; }

 private:
  void forward_chunk(int seq, const int32_t* tokens, int64_t n, bool all_logits, float* logits);

  const Model& model_;
  KvCache& cache_;
  std::optional<float> tau_;
  int64_t chunk_size_ = 256;
  int64_t score_from_ = INT64_MAX;  // first query position scored for token selection
  LayerObserver observer_;
  AttentionStats stats_;
  // Scratch, reused across calls: [T, hidden], [T, H·d], [T, H_kv·d], [T, inter].
  std::vector<float> x_, xn_, q_, k_, v_, attn_, proj_, gate_, up_;
  std::vector<int64_t> positions_;
  std::vector<std::vector<float>> gates_;  // [layer][T · H]
};

}  // namespace podkv
