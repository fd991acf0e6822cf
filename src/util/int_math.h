// Integer rounding the layers share (the divisor and the alignment are > 0).
#pragma once

#include <cstdint>

namespace podkv {

// ceil(a / b): pages for a count of tokens, blocks for a count of values.
constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// x rounded up to a multiple of alignment: a file offset to its section's alignment.
constexpr uint64_t align_up(uint64_t x, uint64_t alignment) { return (x + alignment - 1) / alignment * alignment; }

}  // namespace podkv
