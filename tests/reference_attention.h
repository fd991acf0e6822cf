// A deliberately plain attention for tests: full arrays, no paging, no
// merging. For query position t of layer l and query head i (KV head h), key j
// comes from layer key_layer(l, h, t, j) and value j from value_layer(...), or
// is masked when that layer is -1. One softmax in double over the unmasked keys.
#pragma once

#include <cmath>
#include <functional>
#include <vector>

#include "model/config.h"

namespace podkv::testing {

// The attention geometry of a model config (no weights): what the cache and
// the policies need.
inline ModelConfig attention_geometry(int layers, int kv_heads, int heads, int dim) {
  ModelConfig m;
  m.num_layers = layers;
  m.num_kv_heads = kv_heads;
  m.num_heads = heads;
  m.head_dim = dim;
  return m;
}

// K, V: [layer][kv_head][position][dim] flattened; q: [heads][dim] of one query.
struct FullKv {
  int layers = 0, kv_heads = 0, positions = 0, dim = 0;
  std::vector<float> k, v;
  const float* key(int l, int h, int j) const { return &k[((static_cast<size_t>(l) * kv_heads + h) * positions + j) * dim]; }
  const float* value(int l, int h, int j) const { return &v[((static_cast<size_t>(l) * kv_heads + h) * positions + j) * dim]; }
};

using SourceFn = std::function<int(int layer, int kv_head, int t, int j)>;

// out: [heads][dim] for query position t of `layer`.
inline void reference_attention(const FullKv& kv, int layer, int t, const float* q, int heads, float scale,
                                const SourceFn& key_layer, const SourceFn& value_layer, float* out) {
  const int groups = heads / kv.kv_heads;
  for (int i = 0; i < heads; ++i) {
    const int h = i / groups;
    std::vector<double> p(t + 1, 0.0);
    std::vector<bool> used(t + 1, false);
    double m = -INFINITY;
    for (int j = 0; j <= t; ++j) {
      const int kl = key_layer(layer, h, t, j);
      const int vl = value_layer(layer, h, t, j);
      if (kl < 0 || vl < 0) continue;
      double s = 0;
      for (int x = 0; x < kv.dim; ++x) s += static_cast<double>(q[i * kv.dim + x]) * kv.key(kl, h, j)[x];
      p[j] = s * scale;
      used[j] = true;
      m = std::max(m, p[j]);
    }
    double total = 0;
    for (int j = 0; j <= t; ++j) if (used[j]) total += (p[j] = std::exp(p[j] - m));
    for (int x = 0; x < kv.dim; ++x) {
      double acc = 0;
      for (int j = 0; j <= t; ++j)
        if (used[j]) acc += p[j] * kv.value(value_layer(layer, h, t, j), h, j)[x];
      out[i * kv.dim + x] = static_cast<float>(acc / total);
    }
  }
}

}  // namespace podkv::testing
