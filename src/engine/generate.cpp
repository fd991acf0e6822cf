#include "engine/generate.h"

namespace podkv {

GenerateResult generate(Runner& runner, int seq, const Tokenizer* tokenizer, const std::vector<int32_t>& prompt_ids,
                        const GenerateOptions& options, const std::function<void(const std::string&)>& on_text) {
  SequenceGenerator gen(tokenizer, prompt_ids, options, runner.model().config().vocab_size);
  KvCache& cache = runner.cache();
  const int64_t prompt = static_cast<int64_t>(prompt_ids.size());
  if (!gen.done()) cache.check_fits(seq, cache.length(seq) + prompt, runner.chunk_size(), !cache.prefill_done(seq));
  Batch batch;
  batch.entries.resize(1);
  BatchResult out;
  while (!gen.done()) {
    batch.entries[0] = gen.next_entry(seq, runner.chunk_size());
    const bool wants = batch.entries[0].logits != LogitRows::None;
    runner.step(batch, out);
    if (!wants) continue;
    gen.accept(out.tokens[0]);
    if (on_text) {
      const std::string piece = gen.take_text();
      if (!piece.empty()) on_text(piece);
    }
  }
  GenerateResult result = std::move(gen.result());
  result.kv_bytes_in_use = static_cast<int64_t>(cache.bytes_in_use(seq));
  result.kv_bytes_reserved = static_cast<int64_t>(cache.bytes_reserved(seq));
  return result;
}

}  // namespace podkv
