#include "ops/kv_write.h"

#include "kv/token_classes.h"

namespace podkv {

void kv_write(const KvView& view, int layer, int num_seqs, const int64_t* row_begin, const int64_t* first_pos,
              const float* k, const float* v) {
  const int H = view.num_kv_heads, d = view.head_dim;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < num_seqs; ++b) {
    for (int h = 0; h < H; ++h) {
      const bool keep_k = view.key_rules[layer * H + h].retention != kRetainNone;
      const bool keep_v = view.value_rules[layer * H + h].retention != kRetainNone;
      const StreamView ks = stream_view(view, b, kKeys, layer, h);
      const StreamView vs = stream_view(view, b, kValues, layer, h);
      for (int64_t row = row_begin[b]; row < row_begin[b + 1]; ++row) {
        const int64_t pos = first_pos[b] + (row - row_begin[b]);
        const int64_t at = (row * H + h) * d;
        if (keep_k) kv_encode(view.dtype, k + at, d, const_cast<uint8_t*>(ks.at(pos)));
        if (keep_v) kv_encode(view.dtype, v + at, d, const_cast<uint8_t*>(vs.at(pos)));
      }
    }
  }
}

}  // namespace podkv
