#include "qtune/jinja/tests.h"

#include <cmath>
#include <map>

#include "args.h"
#include "qtune/jinja/evaluator.h"
#include "qtune/jinja/globals.h"
#include "qtune/jinja/operators.h"
#include "qtune/jinja/pystr.h"

namespace qtune::jinja {
namespace {

using TestFn = bool (*)(Interpreter&, const Value&, CallArgs&);

const Value& arg(const char* test, CallArgs& a) {
  if (a.args.size() + a.kwargs.size() != 1)
    throw TemplateError(ErrorKind::Type, fmt::format("the '{}' test takes one argument", test));
  return a.args.empty() ? a.kwargs[0].second : a.args[0];
}

void no_args(const char* test, CallArgs& a) {
  if (!a.args.empty() || !a.kwargs.empty())
    throw TemplateError(ErrorKind::Type, fmt::format("the '{}' test takes no arguments", test));
}

#define SIMPLE(fn, name, expr)                              \
  bool fn(Interpreter&, const Value& v, CallArgs& a) {       \
    no_args(name, a);                                       \
    return (expr);                                          \
  }

SIMPLE(t_boolean, "boolean", v.is_bool())
SIMPLE(t_callable, "callable", v.is_callable())
SIMPLE(t_defined, "defined", !v.is_undefined())
SIMPLE(t_undefined, "undefined", v.is_undefined())
SIMPLE(t_none, "none", v.is_none())
SIMPLE(t_escaped, "escaped", false)
SIMPLE(t_false, "false", v.is_bool() && !v.as_bool())
SIMPLE(t_true, "true", v.is_bool() && v.as_bool())
SIMPLE(t_float, "float", v.is_float())
SIMPLE(t_integer, "integer", v.is_int())
SIMPLE(t_number, "number", v.is_number())
SIMPLE(t_string, "string", v.is_string())
SIMPLE(t_mapping, "mapping", v.is_dict())
SIMPLE(t_iterable, "iterable", v.is_string() || v.is_list() || v.is_dict() || v.is_undefined())
SIMPLE(t_sequence, "sequence", v.is_string() || (v.is_list() && !v.is_generator()) || v.is_dict() || v.is_undefined())
SIMPLE(t_lower, "lower", py::islower(v.to_str()))
SIMPLE(t_upper, "upper", py::isupper(v.to_str()))
#undef SIMPLE

int64_t int_of(const Value& v, const char* test) {
  if (v.is_undefined()) undefined_error(v);
  if (!v.is_number()) throw TemplateError(ErrorKind::Type, fmt::format("the '{}' test needs a number, not {}", test, v.type_name()));
  if (v.is_float()) {
    const double d = v.as_double();
    return static_cast<int64_t>(d);
  }
  return v.as_int();
}

bool t_even(Interpreter&, const Value& v, CallArgs& a) {
  no_args("even", a);
  if (v.is_float()) return std::fmod(v.as_double(), 2.0) == 0;
  return int_of(v, "even") % 2 == 0;
}
bool t_odd(Interpreter&, const Value& v, CallArgs& a) {
  no_args("odd", a);
  if (v.is_float()) return std::fabs(std::fmod(v.as_double(), 2.0)) == 1;
  return int_of(v, "odd") % 2 != 0;
}
bool t_divisibleby(Interpreter&, const Value& v, CallArgs& a) {
  const Value& n = arg("divisibleby", a);
  const Value m = binary_op(Expr::Kind::Mod, v, n, SIZE_MAX);
  return equals(m, Value(0));
}
bool t_eq(Interpreter&, const Value& v, CallArgs& a) { return equals(v, arg("eq", a)); }
bool t_ne(Interpreter&, const Value& v, CallArgs& a) { return !equals(v, arg("ne", a)); }
bool t_lt(Interpreter&, const Value& v, CallArgs& a) {
  const Value& o = arg("lt", a);
  if (v.is_undefined()) undefined_error(v);
  return less(v, o);
}
bool t_le(Interpreter&, const Value& v, CallArgs& a) {
  const Value& o = arg("le", a);
  if (v.is_undefined()) undefined_error(v);
  return !less(o, v);
}
bool t_gt(Interpreter&, const Value& v, CallArgs& a) {
  const Value& o = arg("gt", a);
  if (v.is_undefined()) undefined_error(v);
  return less(o, v);
}
bool t_ge(Interpreter&, const Value& v, CallArgs& a) {
  const Value& o = arg("ge", a);
  if (v.is_undefined()) undefined_error(v);
  return !less(v, o);
}
bool t_in(Interpreter&, const Value& v, CallArgs& a) { return contains(arg("in", a), v); }
bool t_sameas(Interpreter&, const Value& v, CallArgs& a) {
  const Value& o = arg("sameas", a);
  // Python's `is`: the singletons None, True, False; identity otherwise (small ints and equal strings are often
  // the same object in CPython, which a template cannot rely on).
  if (v.is_none() || o.is_none()) return v.is_none() && o.is_none();
  if (v.is_bool() || o.is_bool()) return v.is_bool() && o.is_bool() && v.as_bool() == o.as_bool();
  if (v.is_list() && o.is_list()) return &v.list() == &o.list();
  if (v.is_dict() && o.is_dict()) return &v.dict() == &o.dict();
  if (v.is_string() && o.is_string()) return v.str_ptr() == o.str_ptr();
  if (v.is_int() && o.is_int()) return v.as_int() == o.as_int() && v.as_int() >= -5 && v.as_int() <= 256;
  return false;
}
bool t_filter(Interpreter&, const Value& v, CallArgs& a) {
  no_args("filter", a);
  return v.is_string() && filter_support(v.str()) != Support::Unknown;
}
bool t_test(Interpreter&, const Value& v, CallArgs& a) {
  no_args("test", a);
  return v.is_string() && test_support(v.str()) != Support::Unknown;
}

const std::map<std::string, TestFn>& table() {
  static const std::map<std::string, TestFn> t = {
      {"boolean", t_boolean}, {"callable", t_callable}, {"defined", t_defined},   {"divisibleby", t_divisibleby},
      {"eq", t_eq},           {"equalto", t_eq},        {"==", t_eq},             {"escaped", t_escaped},
      {"even", t_even},       {"false", t_false},       {"filter", t_filter},     {"float", t_float},
      {"ge", t_ge},           {">=", t_ge},             {"gt", t_gt},             {"greaterthan", t_gt},
      {">", t_gt},            {"in", t_in},             {"integer", t_integer},   {"iterable", t_iterable},
      {"le", t_le},           {"<=", t_le},             {"lower", t_lower},       {"lt", t_lt},
      {"lessthan", t_lt},     {"<", t_lt},              {"mapping", t_mapping},   {"ne", t_ne},
      {"!=", t_ne},           {"none", t_none},         {"number", t_number},     {"odd", t_odd},
      {"sameas", t_sameas},   {"sequence", t_sequence}, {"string", t_string},     {"test", t_test},
      {"true", t_true},       {"undefined", t_undefined}, {"upper", t_upper},
  };
  return t;
}

}  // namespace

Support test_support(const std::string& name) {
  return table().count(name) ? Support::Implemented : Support::Unknown;
}

bool apply_test(Interpreter& in, const std::string& name, const Value& subject, CallArgs& args) {
  const auto it = table().find(name);
  if (it == table().end()) throw TemplateError(ErrorKind::Syntax, fmt::format("No test named '{}' found.", name));
  return it->second(in, subject, args);
}

}  // namespace qtune::jinja
