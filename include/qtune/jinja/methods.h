#pragma once
// What `obj.name` finds on a value as jinja2's sandbox lets a template see it: Python's str, dict and list methods
// (bound to the object), a dict's keys, a namespace's attributes. Methods that would change a list or dict are
// there but refused when called (SecurityError, as ImmutableSandboxedEnvironment refuses them); names starting
// with an underscore are refused (the sandbox's rule).
#include <optional>
#include <string>

#include "qtune/jinja/value.h"

namespace qtune::jinja {

// The bound method `name` of a str, dict or list, if Python has one.
std::optional<Value> method_of(const Value& obj, const std::string& name);

}  // namespace qtune::jinja
