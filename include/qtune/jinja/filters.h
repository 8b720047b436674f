#pragma once
// jinja2's builtin filters, with transformers' tojson (ensure_ascii off, indent, separators, sort_keys).
#include <string>

#include "qtune/jinja/value.h"

namespace qtune::jinja {

// Whether qtune implements a filter or test jinja2 has: the parser refuses an unknown name as jinja2 does, and
// running one qtune lacks is an Unsupported error, never a wrong render.
enum class Support { Implemented, Unimplemented, Unknown };

Support filter_support(const std::string& name);

// `subject | name(args)`; throws TemplateError (without a position: the interpreter adds the filter's).
Value apply_filter(Interpreter& in, const std::string& name, const Value& subject, CallArgs& args);

}  // namespace qtune::jinja
