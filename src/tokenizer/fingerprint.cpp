#include "tokenizer/fingerprint.h"

#include <vector>

#include "tokenizer/tokenizer.h"

namespace podkv {

namespace {

// Exercises normalisers and pre-tokenizers: leading and repeated spaces,
// tabs and newlines, contractions, digit runs, punctuation runs, non-ASCII.
constexpr std::string_view kProbe =
    "The quick brown fox jumps over the lazy dog. It's 3:07pm; we'll pay $1,234.56 (or 9876543210).\n"
    "  Two  spaces,\tone tab,\n\n\nthree newlines, and trailing spaces   \n"
    "def f(x):\n    return x**2 + 0x1F  # comment\n"
    "Caf\xc3\xa9 na\xc3\xafve \xc3\x85ngstr\xc3\xb6m \xe2\x80\x94 \xe4\xb8\xad\xe6\x96\x87 "
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\n";

}  // namespace

uint64_t tokenizer_fingerprint(const Tokenizer& tokenizer) {
  Fnv1a64 h;
  h.string("podkv tokenizer fingerprint 1");
  const int32_t vocab = tokenizer.vocab_size();
  h.u64(static_cast<uint64_t>(vocab));
  h.u64(static_cast<uint64_t>(static_cast<int64_t>(tokenizer.bos_id())));
  h.u64(tokenizer.eos_ids().size());
  for (const int32_t id : tokenizer.eos_ids()) h.u64(static_cast<uint64_t>(id));
  for (int32_t id = 0; id < vocab; ++id) h.string(tokenizer.token_bytes(id));
  tokenizer.hash_rules(h);
  const std::vector<int32_t> ids = tokenizer.encode(kProbe, false);
  h.u64(ids.size());
  for (const int32_t id : ids) h.u64(static_cast<uint64_t>(id));
  return h.value();
}

}  // namespace podkv
