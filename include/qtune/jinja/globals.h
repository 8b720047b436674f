#pragma once
// The global functions a chat template can call, as transformers sets them on its jinja2 environment:
// range (at most 100,000 items, the sandbox's MAX_RANGE), dict, namespace, raise_exception, strftime_now, joiner
// and cycler. Nothing else: no file, environment or process access.
#include <optional>
#include <string>

#include "qtune/jinja/value.h"

namespace qtune::jinja {

std::optional<Value> global_function(const std::string& name);

}  // namespace qtune::jinja
