#pragma once
// One exception type for every user-facing failure. The library throws, never exits: the CLI turns it
// into "error: ..." and tests assert on the message (which always names the file/key and what was expected).
#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace qtune {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace qtune
