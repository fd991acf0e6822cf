#include "kv/kv_pool.h"

#include <algorithm>
#include <cstring>

namespace podkv {

HostKvPool::HostKvPool(size_t pages, size_t page_bytes, size_t entry_bytes)
    : page_bytes_(page_bytes), entry_bytes_(entry_bytes), data_(new uint8_t[std::max<size_t>(pages * page_bytes, 1)]) {}

void HostKvPool::copy_entries(const EntryCopy* copies, size_t count) {
  uint8_t* base = data_.get();
  for (size_t i = 0; i < count; ++i) {
    const EntryCopy& c = copies[i];
    std::memmove(base + c.dst_page * page_bytes_ + c.dst_slot * entry_bytes_,
                 base + c.src_page * page_bytes_ + c.src_slot * entry_bytes_, entry_bytes_);
  }
}

}  // namespace podkv
