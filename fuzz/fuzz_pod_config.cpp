// pod.json: anchors per KV head, sink and recent tokens, tau, extra fields,
// checked against a model shape taken from the first two bytes.
#include "fuzz_util.h"
#include "kv/pod_config.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int layers = 1 + data[0] % 48, kv_heads = 1 + data[1] % 16;
  const std::string path = podkv::fuzz::write_file("pod.json", data + 2, size - 2);
  try {
    const podkv::PodConfig cfg = podkv::load_pod_config(path, layers, kv_heads);
    const podkv::PodLayout layout(cfg, layers, kv_heads);
    for (int h = 0; h < kv_heads; ++h)
      for (int l = 0; l < layers; ++l) {
        const int anchor = layout.anchor(l, h);
        if (anchor < 0 || anchor > l) __builtin_trap();
      }
    podkv::to_json(cfg);
  } catch (const podkv::Error&) {
  }
  return 0;
}
