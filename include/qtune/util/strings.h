#pragma once
// The few string helpers the parsers, templates and model code share.
#include <string>

namespace qtune {

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// `s` without leading and trailing characters from `whitespace`.
inline std::string strip(const std::string& s, const char* whitespace = " \t\r\n\f\v") {
  const auto b = s.find_first_not_of(whitespace);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(whitespace) - b + 1);
}

}  // namespace qtune
