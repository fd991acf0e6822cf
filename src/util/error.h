// Errors of the podkv library. The library never prints or exits: it throws
// podkv::Error with a one-line message that names the file, tensor, field or
// option at fault; programs turn it into "error: ..." and a non-zero exit.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>

namespace podkv {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws Error(message) when `condition` is false. Checks stay on in release builds.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

// The same for checks on hot paths (per token, per KV stream of a step): `message` is a callable
// returning the text, called only when the check fails, so passing costs no string building.
// (enable_if, not requires: nvcc compiles the CUDA sources that include this as C++17.)
template <typename MessageFn, typename = std::enable_if_t<std::is_invocable_r_v<std::string, MessageFn>>>
inline void check(bool condition, MessageFn&& message) {
  if (!condition) throw Error(message());
}

}  // namespace podkv
