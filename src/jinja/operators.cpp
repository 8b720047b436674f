#include "qtune/jinja/operators.h"

#include <cmath>
#include <cstdio>
#include <functional>

#include "qtune/jinja/error.h"
#include "qtune/jinja/pystr.h"

namespace qtune::jinja {
namespace {

[[noreturn]] void type_error(const std::string& msg) { throw TemplateError(ErrorKind::Type, msg); }

const char* symbol(Expr::Kind k) {
  switch (k) {
    case Expr::Kind::Add: return "+";
    case Expr::Kind::Sub: return "-";
    case Expr::Kind::Mul: return "*";
    case Expr::Kind::Div: return "/";
    case Expr::Kind::FloorDiv: return "//";
    case Expr::Kind::Mod: return "%";
    case Expr::Kind::Pow: return "** or pow()";
    default: return "?";
  }
}

[[noreturn]] void unsupported_operands(Expr::Kind k, const Value& a, const Value& b) {
  type_error(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", symbol(k), a.type_name(), b.type_name()));
}

[[noreturn]] void overflow() {
  throw TemplateError(ErrorKind::Unsupported, "integer overflow: qtune's integers are 64-bit");
}

template <typename Op>
int64_t checked(Op op, int64_t x, int64_t y) {
  int64_t r;
  if (op(x, y, &r)) overflow();
  return r;
}
bool add_ovf(int64_t x, int64_t y, int64_t* r) { return __builtin_add_overflow(x, y, r); }
bool sub_ovf(int64_t x, int64_t y, int64_t* r) { return __builtin_sub_overflow(x, y, r); }
bool mul_ovf(int64_t x, int64_t y, int64_t* r) { return __builtin_mul_overflow(x, y, r); }

double py_fmod(double a, double b) {  // Python's float %: the sign of the divisor
  double m = std::fmod(a, b);
  if (m != 0 && ((b < 0) != (m < 0))) m += b;
  if (m == 0) m = std::copysign(0.0, b);
  return m;
}

Value repeat(const Value& seq, int64_t n, size_t max_size) {
  if (n <= 0) return seq.is_string() ? Value(std::string()) : Value::list({}, seq.is_tuple());
  if (seq.is_string()) {
    if (seq.str().size() * static_cast<uint64_t>(n) > max_size)
      throw TemplateError(ErrorKind::Limit, "a string longer than the output limit");
    std::string out;
    out.reserve(seq.str().size() * n);
    for (int64_t i = 0; i < n; ++i) out += seq.str();
    return Value(std::move(out));
  }
  if (seq.items().size() * static_cast<uint64_t>(n) > max_size)
    throw TemplateError(ErrorKind::Limit, "a list longer than the output limit");
  std::vector<Value> out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return Value::list(std::move(out), seq.is_tuple());
}

}  // namespace

void undefined_error(const Value& v) {
  if (v.undefined_is_unsafe()) throw TemplateError(ErrorKind::Security, v.undefined_hint());
  throw TemplateError(ErrorKind::Undefined, v.undefined_hint().empty() ? "undefined value" : v.undefined_hint());
}

Value binary_op(Expr::Kind k, const Value& a, const Value& b, size_t max_size) {
  using K = Expr::Kind;
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  if (a.is_number() && b.is_number()) {
    const bool fl = a.is_float() || b.is_float();
    if (fl) {
      const double x = a.as_double(), y = b.as_double();
      switch (k) {
        case K::Add: return Value(x + y);
        case K::Sub: return Value(x - y);
        case K::Mul: return Value(x * y);
        case K::Div:
          if (y == 0) type_error("float division by zero");
          return Value(x / y);
        case K::FloorDiv:
          if (y == 0) type_error("float floor division by zero");
          return Value(std::floor(x / y));
        case K::Mod:
          if (y == 0) type_error("float modulo");
          return Value(py_fmod(x, y));
        case K::Pow:
          if (x == 0 && y < 0) type_error("0.0 cannot be raised to a negative power");
          return Value(std::pow(x, y));
        default: break;
      }
    }
    const int64_t x = a.as_int(), y = b.as_int();
    switch (k) {
      case K::Add: return Value(checked(add_ovf, x, y));
      case K::Sub: return Value(checked(sub_ovf, x, y));
      case K::Mul: return Value(checked(mul_ovf, x, y));
      case K::Div:
        if (y == 0) type_error("division by zero");
        return Value(static_cast<double>(x) / static_cast<double>(y));
      case K::FloorDiv:
      case K::Mod: {
        if (y == 0) type_error(k == K::Mod ? "integer modulo by zero" : "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) overflow();
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return Value(k == K::Mod ? m : q);
      }
      case K::Pow: {
        if (y < 0) {
          if (x == 0) type_error("0.0 cannot be raised to a negative power");
          return Value(std::pow(static_cast<double>(x), static_cast<double>(y)));
        }
        int64_t result = 1, base = x, e = y;
        while (e > 0) {
          if (e & 1) result = checked(mul_ovf, result, base);
          e >>= 1;
          if (e > 0) base = checked(mul_ovf, base, base);
        }
        return Value(result);
      }
      default: break;
    }
  }
  switch (k) {
    case K::Add:
      if (a.is_string() && b.is_string()) {
        if (a.str().size() + b.str().size() > max_size)
          throw TemplateError(ErrorKind::Limit, "a string longer than the output limit");
        if (a.is_markup() || b.is_markup())
          return Value::markup((a.is_markup() ? a.str() : html_escape(a.str())) +
                               (b.is_markup() ? b.str() : html_escape(b.str())));
        return Value(a.str() + b.str());
      }
      if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
        std::vector<Value> out = a.items();
        out.insert(out.end(), b.items().begin(), b.items().end());
        return Value::list(std::move(out), a.is_tuple());
      }
      if (a.is_string()) type_error(fmt::format("can only concatenate str (not \"{}\") to str", b.type_name()));
      if (a.is_list() && !a.is_tuple())
        type_error(fmt::format("can only concatenate list (not \"{}\") to list", b.type_name()));
      if (a.is_tuple()) type_error(fmt::format("can only concatenate tuple (not \"{}\") to tuple", b.type_name()));
      break;
    case K::Mul:
      if ((a.is_string() || a.is_list()) && b.is_number() && !b.is_float()) return repeat(a, b.as_int(), max_size);
      if ((b.is_string() || b.is_list()) && a.is_number() && !a.is_float()) return repeat(b, a.as_int(), max_size);
      if (a.is_string() || a.is_list() || b.is_string() || b.is_list())
        type_error(fmt::format("can't multiply sequence by non-int of type '{}'",
                               (a.is_string() || a.is_list() ? b : a).type_name()));
      break;
    case K::Mod:
      if (a.is_string()) {
        std::string s = percent_format(a.str(), b);
        if (s.size() > max_size) throw TemplateError(ErrorKind::Limit, "a string longer than the output limit");
        return Value(std::move(s));
      }
      break;
    default: break;
  }
  unsupported_operands(k, a, b);
}

Value negate(const Value& v) {
  if (v.is_undefined()) undefined_error(v);
  if (v.is_float()) return Value(-v.as_double());
  if (v.is_number()) {
    if (v.as_int() == INT64_MIN) overflow();
    return Value(-v.as_int());
  }
  type_error(fmt::format("bad operand type for unary -: '{}'", v.type_name()));
}

Value unary_plus(const Value& v) {
  if (v.is_undefined()) undefined_error(v);
  if (v.is_float()) return v;
  if (v.is_number()) return Value(v.as_int());
  type_error(fmt::format("bad operand type for unary +: '{}'", v.type_name()));
}

bool contains(const Value& c, const Value& item) {
  switch (c.type()) {
    case Value::Type::String:
      if (!item.is_string())
        type_error(fmt::format("'in <string>' requires string as left operand, not {}", item.type_name()));
      return c.str().find(item.str()) != std::string::npos;
    case Value::Type::List:
      for (const auto& x : iterate(c))
        if (equals(x, item)) return true;
      return false;
    case Value::Type::Dict: {
      std::function<bool(const Value&)> hashable = [&](const Value& v) {
        if (v.is_dict() || (v.is_list() && !v.is_tuple())) return false;
        if (v.is_tuple())
          for (const auto& x : v.items())
            if (!hashable(x)) return false;
        return true;
      };
      if (!hashable(item))
        type_error(fmt::format("unhashable type: '{}'", item.is_dict() ? "dict" : "list"));
      return c.dict().find(item) != nullptr;
    }
    case Value::Type::Undefined: return false;
    case Value::Type::Namespace: return c.ns().attrs.find(item) != nullptr;
    default: type_error(fmt::format("argument of type '{}' is not iterable", c.type_name()));
  }
}

std::vector<Value> iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::List:
      if (const auto& err = v.list().deferred_error) throw TemplateError(static_cast<ErrorKind>(err->first), err->second);
      return v.items();
    case Value::Type::Dict: {
      std::vector<Value> keys;
      keys.reserve(v.dict().items.size());
      for (const auto& kv : v.dict().items) keys.push_back(kv.first);
      return keys;
    }
    case Value::Type::String: {
      std::vector<Value> chars;
      const std::string& s = v.str();
      for (size_t i = 0; i < s.size();) {
        size_t n = 1;
        const auto b = static_cast<unsigned char>(s[i]);
        if (b >= 0xF0) n = 4;
        else if (b >= 0xE0) n = 3;
        else if (b >= 0xC0) n = 2;
        chars.emplace_back(s.substr(i, n));
        i += n;
      }
      return chars;
    }
    case Value::Type::Undefined: return {};
    default: type_error(fmt::format("'{}' object is not iterable", v.type_name()));
  }
}

Value slice(const Value& seq, std::optional<int64_t> start, std::optional<int64_t> stop, std::optional<int64_t> step) {
  if (seq.is_string()) {
    const std::string& s = seq.str();
    if (py::is_ascii(s)) {
      std::string out;
      for (int64_t i : py::slice_indices(static_cast<int64_t>(s.size()), start, stop, step)) out += s[i];
      return Value(std::move(out));
    }
    const std::u32string u = py::decode(s);
    std::u32string out;
    for (int64_t i : py::slice_indices(static_cast<int64_t>(u.size()), start, stop, step)) out += u[i];
    return Value(py::encode(out));
  }
  if (seq.is_list()) {
    std::vector<Value> out;
    for (int64_t i : py::slice_indices(static_cast<int64_t>(seq.items().size()), start, stop, step))
      out.push_back(seq.items()[i]);
    return Value::list(std::move(out), seq.is_tuple());
  }
  type_error(fmt::format("'{}' object is not subscriptable", seq.type_name()));
}

std::string percent_format(const std::string& f, const Value& args) {
  std::vector<Value> list;
  const DictObj* mapping = nullptr;
  // CPython: a tuple gives the arguments; any other value is the one argument, and one with __getitem__ (a list or
  // dict) also serves %(name)s and is never "not all converted".
  const bool lenient = !args.is_tuple() && (args.is_list() || args.is_dict());
  if (args.is_tuple()) list = args.items();
  else list.push_back(args);
  if (args.is_dict()) mapping = &args.dict();
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%') {
      out += f[i];
      continue;
    }
    if (++i >= f.size()) type_error("incomplete format");
    if (f[i] == '%') {
      out += '%';
      continue;
    }
    const Value* arg = nullptr;
    if (f[i] == '(') {
      const size_t close = f.find(')', i);
      if (close == std::string::npos || !mapping) type_error("format requires a mapping");
      arg = mapping->find(f.substr(i + 1, close - i - 1));
      if (!arg) type_error(f.substr(i + 1, close - i - 1));
      i = close + 1;
    }
    std::string spec = "%";
    while (i < f.size() && std::string_view("-+ #0").find(f[i]) != std::string_view::npos) spec += f[i++];
    while (i < f.size() && ((f[i] >= '0' && f[i] <= '9') || f[i] == '.')) spec += f[i++];
    if (i >= f.size()) type_error("incomplete format");
    const char conv = f[i];
    if (!arg) {
      if (next >= list.size()) type_error("not enough arguments for format string");
      arg = &list[next++];
    }
    if (arg->is_undefined() && conv != 's') undefined_error(*arg);
    char buf[512];
    switch (conv) {
      case 's': {
        const std::string s = arg->to_str();
        if (spec == "%") out += s;
        else {
          std::snprintf(buf, sizeof buf, (spec + "s").c_str(), s.c_str());
          out += buf;
        }
        break;
      }
      case 'r': out += arg->repr(); break;
      case 'd':
      case 'i':
        if (!arg->is_number()) type_error(fmt::format("%{} format: a real number is required, not {}", conv,
                                                      arg->type_name()));
        std::snprintf(buf, sizeof buf, (spec + "lld").c_str(),
                      static_cast<long long>(arg->is_float() ? std::trunc(arg->as_double()) : arg->as_int()));
        out += buf;
        break;
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G':
        if (!arg->is_number()) type_error(fmt::format("must be real number, not {}", arg->type_name()));
        std::snprintf(buf, sizeof buf, (spec + conv).c_str(), arg->as_double());
        out += buf;
        break;
      case 'x':
      case 'X':
      case 'o':
        if (!arg->is_number() || arg->is_float())
          type_error(fmt::format("%{} format: an integer is required, not {}", conv, arg->type_name()));
        std::snprintf(buf, sizeof buf, (spec + "ll" + conv).c_str(), static_cast<long long>(arg->as_int()));
        out += buf;
        break;
      default:
        throw TemplateError(ErrorKind::Unsupported, fmt::format("the %{} conversion is not supported by qtune", conv));
    }
  }
  if (!lenient && next < list.size()) type_error("not all arguments converted during string formatting");
  return out;
}

}  // namespace qtune::jinja
