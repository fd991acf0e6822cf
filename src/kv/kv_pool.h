// The memory of a paged KV cache: `pages` pages of `page_bytes` bytes, owned
// by a backend (host memory here, GPU memory in a GPU backend). The host
// bookkeeping (KvCache) hands out page numbers and, when token selection moves
// or drops kept tokens, asks the pool to copy entries between pages; it never
// touches the bytes itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace podkv {

// Entry `src_slot` of page `src_page` -> entry `dst_slot` of page `dst_page`.
struct EntryCopy {
  int32_t src_page = 0, src_slot = 0, dst_page = 0, dst_slot = 0;
};

class KvPool {
 public:
  virtual ~KvPool() = default;
  // Runs the copies in order (a later copy may read an entry an earlier one wrote).
  virtual void copy_entries(const EntryCopy* copies, size_t count) = 0;
  // Base address of page 0 (host or device), for the per-step view.
  virtual uint8_t* base() = 0;
};

// A pool in host memory. Allocated without initialisation: the OS commits
// pages only when written, so a large budget costs nothing until used.
class HostKvPool : public KvPool {
 public:
  HostKvPool(size_t pages, size_t page_bytes, size_t entry_bytes);
  void copy_entries(const EntryCopy* copies, size_t count) override;
  uint8_t* base() override { return data_.get(); }

 private:
  size_t page_bytes_, entry_bytes_;
  std::unique_ptr<uint8_t[]> data_;
};

}  // namespace podkv
