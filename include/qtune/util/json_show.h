#pragma once
// A JSON value as shown in an error message. dump() recurses once per nesting level, so a small hostile
// file ([[[[...]]]] as a value) would overflow the stack while the message is formatted: deep values are
// named, not printed. Header-only: the torch-free parsers and their fuzzers use it.
#include <nlohmann/json.hpp>

#include <string>

namespace qtune {

inline bool json_nesting_below(const nlohmann::json& v, int levels) {
  if (!v.is_structured()) return true;
  if (levels == 0) return false;
  for (const auto& e : v)
    if (!json_nesting_below(e, levels - 1)) return false;
  return true;
}

inline std::string json_show(const nlohmann::json& v) {
  return json_nesting_below(v, 16) ? v.dump() : std::string("a deeply nested ") + v.type_name();
}

}  // namespace qtune
