#include "backend/observer_copies.h"

#include <algorithm>

#include "util/error.h"

namespace podkv {

void ObserverCopies::observe(BackendOps& ops, const LayerObserver& observer, const ForwardStep& step,
                             const KvView& view, int layer, const float* q, int64_t q_width) {
  // q first: its download waits for the layer's attention (and KV write) to finish.
  q_.resize(static_cast<size_t>(step.rows * q_width));
  ops.download(q_.data(), q, q_.size() * sizeof(float));
  const KvView& host = copy_layer(ops, view, layer);
  const AttentionBatch& batch = step.attention;
  for (int b = 0; b < batch.num_seqs; ++b) {
    const int64_t r0 = batch.row_begin[b];
    observer(LayerObservation{step.seqs[b], b, layer, q_.data() + r0 * q_width, batch.first_pos[b],
                              batch.row_begin[b + 1] - r0, &host});
  }
}

const KvView& ObserverCopies::copy_layer(BackendOps& ops, const KvView& view, int layer) {
  const int L = view.num_layers, H = view.num_kv_heads, B = view.num_seqs;
  check(layer >= 0 && layer < L, "layer observer: no layer " + std::to_string(layer));
  // The layers attention of `layer` reads: itself and its rules' sources.
  layer_read_.assign(static_cast<size_t>(L), 0);
  layer_read_[layer] = 1;
  for (int h = 0; h < H; ++h)
    for (const KvRule* rules : {view.key_rules, view.value_rules}) {
      const KvRule& rule = rules[static_cast<size_t>(layer) * H + h];
      for (int source : {rule.distant_source, rule.proximal_source})
        if (source >= 0 && source < L) layer_read_[source] = 1;
    }
  auto for_each_read_stream = [&](auto&& fn) {
    for (int b = 0; b < B; ++b)
      for (int kind = 0; kind < 4; ++kind)
        for (int l = 0; l < L; ++l)
          if (layer_read_[l])
            for (int h = 0; h < H; ++h) fn(view.stream(b, kind, l, h));
  };

  device_pages_.clear();
  for_each_read_stream([&](int64_t s) {
    for (int64_t i = view.page_indptr[s]; i < view.page_indptr[s + 1]; ++i)
      if (view.page_indices[i] >= 0) device_pages_.push_back(view.page_indices[i]);
  });
  std::sort(device_pages_.begin(), device_pages_.end());
  device_pages_.erase(std::unique(device_pages_.begin(), device_pages_.end()), device_pages_.end());

  // Runs of consecutive device pages land in consecutive host pages: one download each.
  const size_t page_bytes = static_cast<size_t>(view.page_bytes);
  pages_.resize(device_pages_.size() * page_bytes);
  downloads_ = 0;
  for (size_t first = 0; first < device_pages_.size();) {
    size_t end = first + 1;
    while (end < device_pages_.size() && device_pages_[end] == device_pages_[end - 1] + 1) ++end;
    ops.download(pages_.data() + first * page_bytes, view.pool + static_cast<size_t>(device_pages_[first]) * page_bytes,
                 (end - first) * page_bytes);
    ++downloads_;
    first = end;
  }

  const int64_t streams = static_cast<int64_t>(B) * 4 * L * H;
  page_indices_.assign(static_cast<size_t>(view.page_indptr[streams]), -1);
  for_each_read_stream([&](int64_t s) {
    for (int64_t i = view.page_indptr[s]; i < view.page_indptr[s + 1]; ++i) {
      const int32_t page = view.page_indices[i];
      if (page < 0) continue;
      page_indices_[i] = static_cast<int32_t>(std::lower_bound(device_pages_.begin(), device_pages_.end(), page) -
                                              device_pages_.begin());
    }
  });
  host_view_ = view;
  host_view_.pool = pages_.data();
  host_view_.page_indices = page_indices_.data();
  return host_view_;
}

}  // namespace podkv
