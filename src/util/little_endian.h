// Unsigned integers of 1-8 bytes as little-endian bytes, whatever the host: the
// headers of podkv's own files (token files, batch dumps).
#pragma once

#include <cstdint>

namespace podkv {

inline void put_le(uint8_t* at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) at[i] = static_cast<uint8_t>(v >> (8 * i));
}

inline uint64_t get_le(const uint8_t* at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(at[i]) << (8 * i);
  return v;
}

}  // namespace podkv
