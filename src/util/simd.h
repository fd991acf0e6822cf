// <immintrin.h> for the SIMD kernels (matmul, attention, KV entries), when the target has AVX2 or AVX-512.
//
// GCC 12 warns "'__Y' may be used uninitialized" inside its own AVX-512
// intrinsic headers (GCC bug 105593, fixed in GCC 13) once they are inlined under
// -Wall; the warning is about the headers' deliberate `__Y = __Y` idiom, not our
// code, so it is silenced for the header text only.
#pragma once

#if defined(__AVX512F__) || defined(__AVX2__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
