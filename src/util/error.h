// Errors of the podkv library. The library never prints or exits: it throws
// podkv::Error with a one-line message that names the file, tensor, field or
// option at fault; programs turn it into "error: ..." and a non-zero exit.
#pragma once

#include <stdexcept>
#include <string>

namespace podkv {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws Error(message) when `condition` is false. Checks stay on in release builds.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace podkv
