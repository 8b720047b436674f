#pragma once
// Python's json.dumps as transformers' tojson filter calls it: ensure_ascii=False, indent (spaces, or a string),
// separators (", ", ": ") or (",", ": ") with an indent, sort_keys, floats as Python writes them.
#include <optional>
#include <string>
#include <utility>

#include "qtune/jinja/value.h"

namespace qtune::jinja {

struct JsonOptions {
  std::optional<std::string> indent;  // null: one line
  std::optional<std::pair<std::string, std::string>> separators;
  bool sort_keys = false;
  bool ensure_ascii = false;
};

std::string to_json(const Value& v, const JsonOptions& options);

}  // namespace qtune::jinja
