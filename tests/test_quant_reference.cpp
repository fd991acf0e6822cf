// podkv's dequantizers of IQ4_NL and IQ4_XS (and Q4_K, a check of the harness) against llama.cpp's
// own Python reader: tests/fixtures/quant/iq4_reference.safetensors holds random blocks and the
// values gguf-py's quants.py gives them (scripts/fixtures/make_iq4_reference.py says how).
#include <gtest/gtest.h>

#include <string>

#include "quant_fixture.h"
#include "util/dtype.h"

namespace podkv {
namespace {

void expect_reference(const std::string& name, DType t) {
  quant_fixture::expect_reference_values("iq4_reference.safetensors", name, t);
}

TEST(QuantReference, Iq4NlMatchesGgufPy) { expect_reference("iq4_nl", DType::IQ4_NL); }
TEST(QuantReference, Iq4XsMatchesGgufPy) { expect_reference("iq4_xs", DType::IQ4_XS); }
TEST(QuantReference, Q4KMatchesGgufPy) { expect_reference("q4_k", DType::Q4_K); }

}  // namespace
}  // namespace podkv
