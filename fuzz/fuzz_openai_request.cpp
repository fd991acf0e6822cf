// podkv serve's request JSON (/v1/completions and /v1/chat/completions): any
// body is either parsed or refused with an ApiError naming the field.
#include <string>

#include "server/openai_request.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (bool chat : {false, true}) {
    try {
      podkv::parse_completion_request(body, chat);
    } catch (const podkv::Error&) {  // ApiError is an Error
    }
  }
  return 0;
}
