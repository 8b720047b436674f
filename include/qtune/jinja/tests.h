#pragma once
// jinja2's builtin tests (`x is defined`, `x is string`, `x is divisibleby 3` ...).
#include <string>

#include "qtune/jinja/filters.h"
#include "qtune/jinja/value.h"

namespace qtune::jinja {

Support test_support(const std::string& name);

bool apply_test(Interpreter& in, const std::string& name, const Value& subject, CallArgs& args);

}  // namespace qtune::jinja
