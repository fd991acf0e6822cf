// Host copies for a layer observer (backend.h) on a backend whose activations
// and KV pool are device memory (CudaBackend): the observer reads q and the
// layer's keys and values in host memory, so after a layer's attention the
// step's q rows and the pool pages the layer can be read through are
// downloaded, and the observer gets the step's view with its pool pointing at
// the copy. Kept apart from cuda_backend.cpp because it needs no CUDA: it runs
// on any BackendOps, so the CPU build tests it (tests/test_cuda_analyze.cpp).
//
// What is copied for layer l: the pages of layer l's four streams (keys,
// values, key store, value store) of every batch entry and KV head, and those
// of the layers its rules read distant or proximal tokens from (a PoD
// non-anchor layer reads its anchor's keys) -- what attention of layer l reads,
// not the whole pool. They go into a compact host buffer [pages, page_bytes]
// (one layer's pages, more when its rules read other layers; never the pool), one
// download per run of consecutive device pages. The copied view's page tables
// say -1 (not held) for every other stream, so a read past what was copied
// shows as such instead of reading stale bytes.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_ops.h"

namespace podkv {

class ObserverCopies {
 public:
  // Calls `observer` once per batch entry of `step` for `layer`, after the layer's attention: q
  // [step.rows, q_width] is device memory, `view` the step's view (host page tables, device pool).
  // Downloading waits for the queued work (ops.download synchronizes).
  void observe(BackendOps& ops, const LayerObserver& observer, const ForwardStep& step, const KvView& view,
               int layer, const float* q, int64_t q_width);

  // `view` with its pool replaced by a host copy of the pages `layer` reads (see above); valid until
  // the next call. Public for the tests.
  const KvView& copy_layer(BackendOps& ops, const KvView& view, int layer);
  // Device pages copied by the last copy_layer, ascending, and the downloads it took.
  const std::vector<int32_t>& copied_pages() const { return device_pages_; }
  int64_t downloads() const { return downloads_; }

 private:
  std::vector<float> q_;               // [step rows, q_width] the step's q rows
  std::vector<char> layer_read_;       // [L] whether layer l' is read by the observed layer
  std::vector<int32_t> device_pages_;  // pages copied, ascending
  std::vector<int32_t> page_indices_;  // the view's page tables with pages_ indices (-1: not copied)
  std::vector<uint8_t> pages_;         // [device_pages_.size(), page_bytes]
  int64_t downloads_ = 0;
  KvView host_view_;
};

}  // namespace podkv
