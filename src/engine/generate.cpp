#include "engine/generate.h"

#include <algorithm>
#include <chrono>

#include "util/error.h"

namespace podkv {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GenerateResult generate(Runner& runner, int seq, const Tokenizer* tokenizer, const std::vector<int32_t>& prompt_ids,
                        const GenerateOptions& options, const std::function<void(const std::string&)>& on_text) {
  check(!prompt_ids.empty(), "generate: the prompt has no tokens (give a prompt, or a model with a BOS token)");
  check(options.max_new_tokens >= 0, "generate: -n must not be negative");
  const int32_t vocab = runner.model().config().vocab_size;
  GenerateResult result;
  result.prompt_ids = prompt_ids;
  Sampler sampler(options.sampling);
  std::vector<int32_t> history = prompt_ids;
  std::vector<float> logits;

  auto t0 = std::chrono::steady_clock::now();
  if (options.max_new_tokens > 0) runner.forward(seq, prompt_ids, false, logits);
  result.prefill_seconds = seconds_since(t0);

  std::vector<int32_t> eos = options.eos_ids;
  if (tokenizer != nullptr) eos.insert(eos.end(), tokenizer->eos_ids().begin(), tokenizer->eos_ids().end());
  std::unique_ptr<StreamDecoder> decoder;
  if (tokenizer != nullptr) decoder = std::make_unique<StreamDecoder>(*tokenizer);
  size_t emitted = 0;  // bytes of result.text already passed to on_text
  result.stop_reason = "length";

  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < options.max_new_tokens; ++i) {
    const int32_t next = sampler.sample(logits.data(), vocab, history);
    if (options.stop_at_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) {
      result.stop_reason = "eos";
      break;
    }
    result.generated_ids.push_back(next);
    history.push_back(next);
    bool stop = false;
    if (decoder) {
      result.text += decoder->push(next);
      // Hold back text that could be the start of a stop string.
      size_t safe = result.text.size();
      const size_t hit = find_stop_string(result.text, options.stop_strings, 0);
      if (hit != std::string::npos) {
        result.text.resize(hit);
        safe = hit;
        stop = true;
        result.stop_reason = "stop_string";
      } else {
        for (const std::string& s : options.stop_strings) {
          for (size_t k = std::min(s.size() - 1, result.text.size()); k > 0; --k) {
            if (result.text.compare(result.text.size() - k, k, s, 0, k) == 0) {
              safe = std::min(safe, result.text.size() - k);
              break;
            }
          }
        }
      }
      if (on_text && safe > emitted) {
        on_text(result.text.substr(emitted, safe - emitted));
        emitted = safe;
      }
    }
    if (stop || i + 1 == options.max_new_tokens) break;
    runner.forward(seq, {next}, false, logits);
  }
  if (decoder && result.stop_reason != "stop_string") result.text += decoder->flush();
  if (on_text && result.text.size() > emitted) on_text(result.text.substr(emitted));
  result.decode_seconds = seconds_since(t0);
  result.kv_bytes_in_use = static_cast<int64_t>(runner.cache().bytes_in_use(seq));
  result.kv_bytes_reserved = static_cast<int64_t>(runner.cache().bytes_reserved(seq));
  return result;
}

}  // namespace podkv
