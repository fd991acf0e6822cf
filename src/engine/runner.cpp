#include "engine/runner.h"

#include <algorithm>
#include <climits>

#include "backend/cpu_backend.h"
#include "util/error.h"

namespace podkv {

namespace {

void check_geometry(const Model& model, const KvCache& cache) {
  const ModelConfig& c = model.config();
  const KvLayout& l = cache.layout();
  check(l.num_layers == c.num_layers && l.num_kv_heads == c.num_kv_heads && l.head_dim == c.head_dim,
        "kv cache layout (" + std::to_string(l.num_layers) + " layers, " + std::to_string(l.num_kv_heads) +
            " KV heads, head_dim " + std::to_string(l.head_dim) + ") does not match the model");
}

}  // namespace

Runner::Runner(const Model& model, KvCache& cache)
    : owned_backend_(std::make_unique<CpuBackend>(model)), backend_(owned_backend_.get()), cache_(cache) {
  check_geometry(model, cache);
  pool_ = backend_->create_pool(cache_);
}

Runner::Runner(Backend& backend, KvCache& cache) : backend_(&backend), cache_(cache) {
  check_geometry(backend.model(), cache);
  pool_ = backend_->create_pool(cache_);
}

Runner::~Runner() {
  if (cache_.pool() == pool_.get()) cache_.attach_pool(nullptr);
}

void Runner::set_chunk_size(int64_t tokens) {
  check(tokens >= 1, "chunk size must be at least one token, got " + std::to_string(tokens));
  chunk_size_ = tokens;
}

void Runner::step(const Batch& batch, BatchResult& result) {
  const ModelConfig& c = model().config();
  const KvLayout& layout = cache_.layout();
  const size_t B = batch.entries.size();
  check(B > 0, "forward: empty batch");
  seqs_.clear();
  new_lengths_.clear();
  int64_t pages = 0;
  for (const BatchEntry& e : batch.entries) {
    // Per entry and token of every step: the messages are built only on failure.
    check(!e.tokens.empty(), [&] { return "forward: no tokens for sequence " + std::to_string(e.seq); });
    check(e.sample == nullptr || e.logits == LogitRows::Last, [&] {
      return "forward: a sample request of sequence " + std::to_string(e.seq) + " needs LogitRows::Last";
    });
    check(std::find(seqs_.begin(), seqs_.end(), e.seq) == seqs_.end(),
          [&] { return "forward: sequence " + std::to_string(e.seq) + " appears twice in one batch"; });
    for (int32_t id : e.tokens)
      check(id >= 0 && id < c.vocab_size, [&] {
        return "token id " + std::to_string(id) + " is outside the vocabulary (" + std::to_string(c.vocab_size) +
               " tokens)";
      });
    const int64_t length = cache_.length(e.seq) + static_cast<int64_t>(e.tokens.size());
    if (length > c.max_position_embeddings)
      throw Error("sequence of " + std::to_string(length) + " tokens is longer than the model's context (" +
                  std::to_string(c.max_position_embeddings) + " tokens, max_position_embeddings)");
    seqs_.push_back(e.seq);
    new_lengths_.push_back(length);
    pages += cache_.pages_to_reserve(e.seq, length);
  }
  // All or nothing: nothing is reserved unless every entry fits.
  if (pages > static_cast<int64_t>(cache_.free_pages()))
    throw KvCacheFull("kv cache full: the batch needs " + std::to_string(pages) + " more pages (" +
                      std::to_string(pages * static_cast<int64_t>(cache_.page_bytes())) + " bytes), " +
                      std::to_string(cache_.free_pages()) + " pages free of " + std::to_string(cache_.num_pages()));
  for (size_t b = 0; b < B; ++b) cache_.reserve(seqs_[b], new_lengths_[b]);

  // Rows, positions, and which queries add to the selection scores (H2O:
  // every one; SnapKV: the prompt's last `window` queries).
  row_begin_.assign(1, 0);
  first_pos_.clear();
  score_from_.clear();
  positions_.clear();
  tokens_.clear();
  logit_rows_.clear();
  samples_.clear();
  result.logit_begin.assign(1, 0);
  for (size_t b = 0; b < B; ++b) {
    const BatchEntry& e = batch.entries[b];
    const int64_t start = new_lengths_[b] - static_cast<int64_t>(e.tokens.size());
    const int64_t n = static_cast<int64_t>(e.tokens.size());
    first_pos_.push_back(start);
    int64_t score_from = INT64_MAX;
    if (layout.selection == Selection::HeavyHitters) score_from = 0;
    if (layout.selection == Selection::SnapKV && !cache_.prefill_done(e.seq) && e.prompt_length > 0)
      score_from = e.prompt_length - layout.observation_window;
    score_from_.push_back(score_from);
    for (int64_t t = 0; t < n; ++t) {
      positions_.push_back(start + t);
      tokens_.push_back(e.tokens[t]);
      const bool want = e.logits == LogitRows::All || (e.logits == LogitRows::Last && t == n - 1);
      if (want) {
        logit_rows_.push_back(row_begin_.back() + t);
        samples_.push_back(e.sample);
      }
    }
    row_begin_.push_back(row_begin_.back() + n);
    result.logit_begin.push_back(static_cast<int64_t>(logit_rows_.size()));
  }

  const KvView& view = view_builder_.build(cache_, pool_->base(), seqs_, new_lengths_);
  ForwardStep step;
  step.rows = row_begin_.back();
  step.tokens = tokens_.data();
  step.positions = positions_.data();
  step.attention.num_seqs = static_cast<int>(B);
  step.attention.row_begin = row_begin_.data();
  step.attention.first_pos = first_pos_.data();
  step.attention.score_from = score_from_.data();
  step.seqs = seqs_.data();
  step.logit_rows = logit_rows_.data();
  step.num_logit_rows = static_cast<int64_t>(logit_rows_.size());
  step.tau = tau_ ? *tau_ : 1.0f;
  // The device draws the tokens when it can and every logits row is to be sampled: only
  // the token ids come back.
  const bool device_samples = backend_->samples_on_device() && !samples_.empty() &&
                              std::find(samples_.begin(), samples_.end(), nullptr) == samples_.end();
  step.samples = device_samples ? samples_.data() : nullptr;
  output_.tokens.clear();
  backend_->forward(step, view, output_);
  stats_.distant_parts += output_.stats.distant_parts;
  stats_.skipped_distant_parts += output_.stats.skipped_distant_parts;
  output_.stats = AttentionStats{};

  if (!output_.scores.empty()) view_builder_.apply_scores(cache_, seqs_, output_.scores.data());
  for (size_t b = 0; b < B; ++b) {
    cache_.commit(seqs_[b], new_lengths_[b]);
    if (batch.entries[b].end_prefill) cache_.end_prefill(seqs_[b]);
  }
  result.vocab = c.vocab_size;
  result.logits.swap(output_.logits);
  // The requested draws the device did not make (a host backend, or a row it could not
  // sample, which the host sampler then reports).
  result.tokens.assign(B, -1);
  for (size_t b = 0; b < B; ++b) {
    const SampleRequest* request = batch.entries[b].sample;
    if (request == nullptr) continue;
    const int64_t row = result.logit_begin[b + 1] - 1;
    const int32_t token = device_samples ? output_.tokens[row] : -1;
    result.tokens[b] = token >= 0 ? token : host_sampler_.sample(*request, result.logits.data() + row * c.vocab_size,
                                                                   c.vocab_size);
  }
}

void Runner::forward(int seq, const std::vector<int32_t>& tokens, bool all_logits, std::vector<float>& logits) {
  const ModelConfig& c = model().config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  check(n > 0, "forward: no tokens");
  const int64_t start = cache_.length(seq);
  if (start + n > c.max_position_embeddings)
    throw Error("sequence of " + std::to_string(start + n) + " tokens is longer than the model's context (" +
                std::to_string(c.max_position_embeddings) + " tokens, max_position_embeddings)");
  // Check the whole request's peak up front so a refusal changes nothing;
  // chunks then reserve and give back pages as they go.
  const bool prefill = !cache_.prefill_done(seq);
  cache_.check_fits(seq, start + n, chunk_size_, prefill);
  logits.assign(static_cast<size_t>(all_logits ? n : 1) * c.vocab_size, 0.0f);
  Batch batch;
  batch.entries.resize(1);
  BatchEntry& e = batch.entries[0];
  e.seq = seq;
  e.prompt_length = prefill ? start + n : 0;
  BatchResult result;
  for (int64_t done = 0; done < n;) {
    const int64_t chunk = std::min(chunk_size_, n - done);
    const bool last = done + chunk == n;
    e.tokens.assign(tokens.begin() + done, tokens.begin() + done + chunk);
    e.logits = all_logits ? LogitRows::All : (last ? LogitRows::Last : LogitRows::None);
    e.end_prefill = prefill && last;
    step(batch, result);
    if (all_logits) std::copy(result.logits.begin(), result.logits.end(), logits.begin() + done * c.vocab_size);
    else if (last) std::copy(result.logits.begin(), result.logits.end(), logits.begin());
    done += chunk;
  }
}

}  // namespace podkv
