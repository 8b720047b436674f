#pragma once
// Python's operators on Jinja values: arithmetic (int overflow is an error, not a wrong number), `%` formatting of
// strings, `in`, iteration and slicing, with the TypeErrors Python raises and jinja2's UndefinedError for an
// undefined operand.
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "qtune/jinja/ast.h"
#include "qtune/jinja/value.h"

namespace qtune::jinja {

// `kind` is one of Add, Sub, Mul, Div, FloorDiv, Mod, Pow; results longer than max_size bytes are refused.
Value binary_op(Expr::Kind kind, const Value& a, const Value& b, size_t max_size);
Value negate(const Value& v);
Value unary_plus(const Value& v);

bool contains(const Value& container, const Value& item);  // item in container

// The items a for loop (or list()) sees: a list's elements, a dict's keys, a string's characters, nothing for an
// undefined value; a TypeError otherwise.
std::vector<Value> iterate(const Value& v);

// seq[start:stop:step] of a string, list or tuple.
Value slice(const Value& seq, std::optional<int64_t> start, std::optional<int64_t> stop, std::optional<int64_t> step);

// An undefined value used as more than text: jinja2's UndefinedError with its message.
[[noreturn]] void undefined_error(const Value& v);

// Python's printf-style `fmt % args` (jinja2's format filter).
std::string percent_format(const std::string& fmt, const Value& args);

}  // namespace qtune::jinja
