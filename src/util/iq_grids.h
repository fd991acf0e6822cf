// ggml's i-quant grid tables (definitions in iq2_grids.cpp and iq1_iq3_grids.cpp, written by
// scripts/fixtures/make_iq_grids.py from llama.cpp's compiled ggml; MIT License, the ggml authors).
// A grid row packs 8 (IQ3: 4) values, one a byte, value j in byte j (little-endian): magnitudes for
// the IQ2 / IQ3 types, the signed values -1, 0, +1 for IQ1. The sign tables flip value j of a row
// when bit j of the sign byte is set.
#pragma once

#include <cstdint>

namespace podkv::quant {

extern const uint64_t kIq2xxsGrid[256];   // IQ2_XXS: 8-bit index
extern const uint64_t kIq2xsGrid[512];    // IQ2_XS: 9-bit index
extern const uint64_t kIq2sGrid[1024];    // IQ2_S: 10-bit index
extern const uint32_t kIq3xxsGrid[256];   // IQ3_XXS: 8-bit index, 4 values a row
extern const uint32_t kIq3sGrid[512];     // IQ3_S: 9-bit index, 4 values a row
extern const uint64_t kIq1sGrid[2048];    // IQ1_S, IQ1_M: 11-bit index, int8 values -1, 0, 1
// IQ2_XXS, IQ2_XS, IQ3_XXS: a 7-bit code -> 8 sign bits with an even number set (the eighth is parity).
extern const uint8_t kIqSigns[128];

}  // namespace podkv::quant
