// The backend seam: a backend owns the model's weights in its memory, the KV
// pool and its scratch buffers, and runs one forward pass over a batch step.
// The host side (engine/runner.h) does the bookkeeping: it reserves pages,
// builds the plain KvView (kv/kv_view.h) and the step description below,
// calls forward(), and commits. The CPU backend (cpu_backend.h) is the
// reference every other backend is tested against, op by op (backend_ops.h)
// and end to end.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kv/kv_cache.h"
#include "kv/kv_view.h"
#include "model/model.h"
#include "ops/attention.h"
#include "sampling/sampler.h"

namespace podkv {

// One forward step over the tokens of several sequences (plain arrays; rows
// of entry b are [attention.row_begin[b], attention.row_begin[b + 1])).
struct ForwardStep {
  int64_t rows = 0;
  const int32_t* tokens = nullptr;     // [rows]
  const int64_t* positions = nullptr;  // [rows]
  AttentionBatch attention;            // per entry: rows, first position, score_from
  const int* seqs = nullptr;           // [B] sequence ids, for the observer
  const int64_t* logit_rows = nullptr; // rows whose logits are wanted, ascending
  int64_t num_logit_rows = 0;
  float tau = 1.0f;                    // PoD skipping threshold (>= 1: never skip)
  // When set (only for a backend whose samples_on_device() is true): one request per
  // logit row, all non-null; the backend returns the drawn tokens instead of the logits.
  const SampleRequest* const* samples = nullptr;  // [num_logit_rows]
};

struct ForwardOutput {
  // [num_logit_rows, vocab]; with step.samples, empty unless some row could not be sampled
  // on the device (a NaN or +inf logit, every logit -inf): then all rows, for the host to
  // sample (and report) them.
  std::vector<float> logits;
  std::vector<int32_t> tokens;  // [num_logit_rows] with step.samples: the drawn tokens, -1 where not
  std::vector<float> scores;  // the view's score output (view's score_count floats)
  AttentionStats stats;       // added to
};

// What a layer observer sees: batch entry `entry` (sequence `seq`) of the
// step's view, its queries q [tokens, H * d] (RoPE applied, host memory) at
// positions first_pos .. first_pos + tokens - 1, and through `view` the
// layer's keys and values of every position up to them (host memory).
struct LayerObservation {
  int seq = 0, entry = 0, layer = 0;
  const float* q = nullptr;
  int64_t first_pos = 0, tokens = 0;
  const KvView* view = nullptr;
};
// Called once per layer and batch entry right after that layer's attention.
// For tools that inspect attention (analyze); a backend may refuse it.
using LayerObserver = std::function<void(const LayerObservation&)>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual const Model& model() const = 0;
  // Allocates the memory for `cache`'s pages and attaches it (cache.attach_pool).
  virtual std::unique_ptr<KvPool> create_pool(KvCache& cache) = 0;
  // Runs the step: writes the new keys and values through `view`, runs
  // every layer, returns the requested logits and the selection scores.
  virtual void forward(const ForwardStep& step, const KvView& view, ForwardOutput& out) = 0;
  virtual void set_layer_observer(LayerObserver observer) = 0;
  // Whether forward() takes ForwardStep::samples (draws next tokens where the logits are).
  virtual bool samples_on_device() const { return false; }
};

}  // namespace podkv
