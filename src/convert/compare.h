// Logits of two models on the same tokens, compared: how far a converted or
// quantized model is from its source.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model.h"

namespace podkv {

struct LogitsComparison {
  int64_t tokens = 0;
  double max_relative_error = 0;  // max |a − b| / max |b| over every position and vocab entry
  double rms_error = 0;           // root mean square of a − b
  double top1_agreement = 0;      // fraction of positions whose argmax agrees
};

// Runs both models (dense cache, one prefill of all `ids`) and compares the
// candidate's logits with the reference's. The models must share the vocabulary size.
LogitsComparison compare_logits(const Model& reference, const Model& candidate, const std::vector<int32_t>& ids);

}  // namespace podkv
