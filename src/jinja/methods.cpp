#include "qtune/jinja/methods.h"

#include <algorithm>
#include <functional>

#include "args.h"
#include "qtune/jinja/evaluator.h"
#include "qtune/jinja/operators.h"
#include "qtune/jinja/pystr.h"

namespace qtune::jinja {
namespace {

[[noreturn]] void type_error(const std::string& m) { throw TemplateError(ErrorKind::Type, m); }

using Method = std::function<Value(Interpreter&, CallArgs&)>;

Value bound_method(const std::string& name, Method fn) {
  auto c = std::make_shared<CallableObj>();
  c->name = name;
  c->fn = std::move(fn);
  return Value(c);
}

std::string str_arg(const Value& v, const char* method) {
  if (!v.is_string()) type_error(fmt::format("{}() argument must be str, not {}", method, v.type_name()));
  return v.str();
}

std::optional<std::string> chars_arg(const Params& p, size_t i, const char* method) {
  const Value v = p.get(i, Value::none());
  if (v.is_none()) return std::nullopt;
  return str_arg(v, method);
}

int64_t int_arg(const Value& v, const char* what) {
  if (!v.is_number() || v.is_float()) type_error(fmt::format("'{}' object cannot be interpreted as an integer", v.type_name()));
  return v.as_int();
}

Value strings(const std::vector<std::string>& parts) {
  std::vector<Value> out;
  out.reserve(parts.size());
  for (const auto& s : parts) out.emplace_back(s);
  return Value::list(std::move(out));
}

// str.format's replacement fields: {}, {0}, {name}, with .attr / [key] lookups and !s / !r; format specs are
// refused (jinja2's sandboxed formatter accepts them; chat templates do not use them).
std::string str_format(Interpreter& in, const std::string& f, CallArgs& a) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    const char c = f[i];
    if (c == '}') {
      if (i + 1 < f.size() && f[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      type_error("Single '}' encountered in format string");
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < f.size() && f[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const size_t close = f.find('}', i);
    if (close == std::string::npos) type_error("expected '}' before end of string");
    std::string field = f.substr(i + 1, close - i - 1);
    i = close;
    char conv = 0;
    if (const auto colon = field.find(':'); colon != std::string::npos) {
      if (colon + 1 < field.size())
        throw TemplateError(ErrorKind::Unsupported, "format specs in str.format are not supported by qtune");
      field = field.substr(0, colon);
    }
    if (const auto bang = field.find('!'); bang != std::string::npos) {
      conv = bang + 1 < field.size() ? field[bang + 1] : 0;
      field = field.substr(0, bang);
    }
    size_t end = 0;
    while (end < field.size() && field[end] != '.' && field[end] != '[') ++end;
    const std::string head = field.substr(0, end);
    Value v;
    if (head.empty() || std::all_of(head.begin(), head.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      const size_t idx = head.empty() ? auto_index++ : static_cast<size_t>(std::stoul(head));
      if (idx >= a.args.size()) type_error(fmt::format("Replacement index {} out of range for positional args tuple", idx));
      v = a.args[idx];
    } else {
      const auto it = std::find_if(a.kwargs.begin(), a.kwargs.end(), [&](const auto& kv) { return kv.first == head; });
      if (it == a.kwargs.end()) type_error(fmt::format("'{}'", head));
      v = it->second;
    }
    while (end < field.size()) {
      if (field[end] == '.') {
        size_t e = end + 1;
        while (e < field.size() && field[e] != '.' && field[e] != '[') ++e;
        v = in.getattr(v, field.substr(end + 1, e - end - 1));
        end = e;
      } else {
        const size_t e = field.find(']', end);
        if (e == std::string::npos) type_error("Missing ']' in format string");
        const std::string key = field.substr(end + 1, e - end - 1);
        const bool digits = !key.empty() && std::all_of(key.begin(), key.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
        v = in.getitem(v, digits ? Value(static_cast<int64_t>(std::stoll(key))) : Value(key));
        end = e + 1;
      }
    }
    if (v.is_undefined() && v.undefined_is_unsafe()) undefined_error(v);
    out += conv == 'r' ? v.repr() : v.to_str();
    in.check_size(out.size());
  }
  return out;
}

bool starts_or_ends(const std::string& s, const Value& affix, bool ends, const char* method) {
  auto one = [&](const Value& x) {
    const std::string a = str_arg(x, method);
    if (a.size() > s.size()) return false;
    return ends ? s.compare(s.size() - a.size(), a.size(), a) == 0 : s.compare(0, a.size(), a) == 0;
  };
  if (affix.is_tuple()) {
    for (const auto& x : affix.items())
      if (one(x)) return true;
    return false;
  }
  if (!affix.is_string())
    type_error(fmt::format("{} first arg must be str or a tuple of str, not {}", method, affix.type_name()));
  return one(affix);
}

std::string pad(const std::string& s, int64_t width, const std::string& fill, int where) {  // 0 left 1 center 2 right
  const int64_t len = static_cast<int64_t>(py::length(s));
  if (width <= len) return s;
  const int64_t marg = width - len;
  int64_t left = where == 0 ? 0 : where == 2 ? marg : marg / 2 + (marg & width & 1);
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = 0; i < marg - left; ++i) out += fill;
  return out;
}

std::optional<Value> string_method(const std::shared_ptr<const std::string>& sp, const std::string& name) {
  const std::string& n = name;
  auto m = [&](Method fn) { return std::optional<Value>(bound_method("str." + n, std::move(fn))); };
  if (n == "strip" || n == "lstrip" || n == "rstrip")
    return m([sp, n](Interpreter&, CallArgs& a) {
      Params p(n, a, {"chars"});
      return Value(py::strip(*sp, chars_arg(p, 0, n.c_str()), n != "rstrip", n != "lstrip"));
    });
  if (n == "split" || n == "rsplit")
    return m([sp, n](Interpreter&, CallArgs& a) {
      Params p(n, a, {"sep", "maxsplit"});
      const int64_t maxsplit = int_arg(p.get(1, Value(-1)), "maxsplit");
      const auto sep = chars_arg(p, 0, n.c_str());
      return strings(n == "split" ? py::split(*sp, sep, maxsplit) : py::rsplit(*sp, sep, maxsplit));
    });
  if (n == "splitlines")
    return m([sp](Interpreter&, CallArgs& a) {
      Params p("splitlines", a, {"keepends"});
      return strings(py::splitlines(*sp, p.get(0, Value(false)).truthy()));
    });
  if (n == "startswith" || n == "endswith")
    return m([sp, n](Interpreter&, CallArgs& a) {
      Params p(n, a, {"prefix", "start", "end"});
      if (!p.has(0)) type_error(fmt::format("{}() takes at least 1 argument (0 given)", n));
      if (p.has(1) || p.has(2)) {
        const Value sub = slice(Value(sp), p.has(1) ? std::optional<int64_t>(int_arg(*p.at(1), "start")) : std::nullopt,
                                p.has(2) ? std::optional<int64_t>(int_arg(*p.at(2), "end")) : std::nullopt, std::nullopt);
        return Value(starts_or_ends(sub.str(), *p.at(0), n == "endswith", n.c_str()));
      }
      return Value(starts_or_ends(*sp, *p.at(0), n == "endswith", n.c_str()));
    });
  if (n == "upper" || n == "lower" || n == "title" || n == "capitalize" || n == "swapcase" || n == "casefold")
    return m([sp, n](Interpreter&, CallArgs& a) {
      Params p(n, a, {});
      if (n == "upper") return Value(py::upper(*sp));
      if (n == "lower" || n == "casefold") return Value(py::lower(*sp));
      if (n == "title") return Value(py::title(*sp));
      if (n == "capitalize") return Value(py::capitalize(*sp));
      return Value(py::swapcase(*sp));
    });
  if (n == "isdigit" || n == "isdecimal" || n == "isnumeric" || n == "isalpha" || n == "isalnum" || n == "isspace" ||
      n == "isupper" || n == "islower")
    return m([sp, n](Interpreter&, CallArgs& a) {
      Params p(n, a, {});
      if (n == "isalpha") return Value(py::isalpha(*sp));
      if (n == "isalnum") return Value(py::isalnum(*sp));
      if (n == "isspace") return Value(py::isstrspace(*sp));
      if (n == "isupper") return Value(py::isupper(*sp));
      if (n == "islower") return Value(py::islower(*sp));
      return Value(py::isdigit(*sp));
    });
  if (n == "replace")
    return m([sp](Interpreter& in, CallArgs& a) {
      Params p("replace", a, {"old", "new", "count"});
      if (!p.has(0) || !p.has(1)) type_error("replace expected at least 2 arguments");
      std::string r = py::replace(*sp, str_arg(*p.at(0), "replace"), str_arg(*p.at(1), "replace"),
                                  int_arg(p.get(2, Value(-1)), "count"));
      in.check_size(r.size());
      return Value(std::move(r));
    });
  if (n == "format")
    return m([sp](Interpreter& in, CallArgs& a) { return Value(str_format(in, *sp, a)); });
  if (n == "find" || n == "rfind" || n == "index" || n == "rindex" || n == "count")
    return m([sp, n](Interpreter&, CallArgs& a) {
      Params p(n, a, {"sub", "start", "end"});
      if (!p.has(0)) type_error(fmt::format("{}() takes at least 1 argument (0 given)", n));
      if (p.has(1) || p.has(2))
        throw TemplateError(ErrorKind::Unsupported, fmt::format("str.{} with start/end is not supported by qtune", n));
      const std::string sub = str_arg(*p.at(0), n.c_str());
      if (n == "count") return Value(py::count(*sp, sub));
      const int64_t at = py::find(*sp, sub, n[0] == 'r');
      if (at < 0 && (n == "index" || n == "rindex")) type_error("substring not found");
      return Value(at);
    });
  if (n == "join")
    return m([sp](Interpreter& in, CallArgs& a) {
      Params p("join", a, {"iterable"});
      if (!p.has(0)) type_error("join() takes exactly one argument (0 given)");
      std::string out;
      bool first = true;
      for (const auto& x : iterate(*p.at(0))) {
        if (!x.is_string()) type_error(fmt::format("sequence item: expected str instance, {} found", x.type_name()));
        if (!first) out += *sp;
        first = false;
        out += x.str();
        in.check_size(out.size());
      }
      return Value(std::move(out));
    });
  if (n == "center" || n == "ljust" || n == "rjust")
    return m([sp, n](Interpreter& in, CallArgs& a) {
      Params p(n, a, {"width", "fillchar"});
      const int64_t w = int_arg(p.get(0, Value(0)), "width");
      in.check_size(static_cast<size_t>(std::max<int64_t>(w, 0)));
      const std::string fill = p.has(1) ? str_arg(*p.at(1), n.c_str()) : " ";
      return Value(pad(*sp, w, fill, n == "ljust" ? 0 : n == "center" ? 1 : 2));
    });
  if (n == "zfill")
    return m([sp](Interpreter& in, CallArgs& a) {
      Params p("zfill", a, {"width"});
      const int64_t w = int_arg(p.get(0, Value(0)), "width");
      in.check_size(static_cast<size_t>(std::max<int64_t>(w, 0)));
      const int64_t len = static_cast<int64_t>(py::length(*sp));
      if (w <= len) return Value(*sp);
      std::string s = *sp;
      const bool sign = !s.empty() && (s[0] == '+' || s[0] == '-');
      s.insert(sign ? 1 : 0, std::string(static_cast<size_t>(w - len), '0'));
      return Value(std::move(s));
    });
  if (n == "partition" || n == "rpartition")
    return m([sp, n](Interpreter&, CallArgs& a) {
      Params p(n, a, {"sep"});
      const std::string sep = str_arg(p.get(0, Value::none()), n.c_str());
      if (sep.empty()) type_error("empty separator");
      const size_t at = n == "partition" ? sp->find(sep) : sp->rfind(sep);
      if (at == std::string::npos)
        return n == "partition" ? Value::list({Value(*sp), Value(""), Value("")}, true)
                                : Value::list({Value(""), Value(""), Value(*sp)}, true);
      return Value::list({Value(sp->substr(0, at)), Value(sep), Value(sp->substr(at + sep.size()))}, true);
    });
  if (n == "removeprefix" || n == "removesuffix")
    return m([sp, n](Interpreter&, CallArgs& a) {
      Params p(n, a, {"affix"});
      const std::string x = str_arg(p.get(0, Value::none()), n.c_str());
      if (n == "removeprefix") return Value(sp->compare(0, x.size(), x) == 0 ? sp->substr(x.size()) : *sp);
      return Value(x.size() <= sp->size() && sp->compare(sp->size() - x.size(), x.size(), x) == 0
                       ? sp->substr(0, sp->size() - x.size())
                       : *sp);
    });
  if (n == "encode" || n == "expandtabs" || n == "translate" || n == "maketrans" || n == "format_map" ||
      n == "istitle" || n == "isidentifier" || n == "isprintable" || n == "isascii")
    return m([n](Interpreter&, CallArgs&) -> Value {
      throw TemplateError(ErrorKind::Unsupported, fmt::format("str.{} is not supported by qtune", n));
    });
  return std::nullopt;
}

std::optional<Value> dict_method(const std::shared_ptr<const DictObj>& d, const std::string& n) {
  auto m = [&](Method fn) { return std::optional<Value>(bound_method("dict." + n, std::move(fn))); };
  if (n == "items" || n == "keys" || n == "values")
    return m([d, n](Interpreter&, CallArgs& a) {
      Params p(n, a, {});
      std::vector<Value> out;
      out.reserve(d->items.size());
      for (const auto& [k, v] : d->items)
        out.push_back(n == "items" ? Value::list({k, v}, true) : n == "keys" ? k : v);
      return Value::list(std::move(out));
    });
  if (n == "get")
    return m([d](Interpreter&, CallArgs& a) {
      Params p("get", a, {"key", "default"});
      if (!p.has(0)) type_error("get expected at least 1 argument, got 0");
      if (const Value* v = d->find(*p.at(0))) return *v;
      return p.get(1, Value::none());
    });
  if (n == "copy")
    return m([d](Interpreter&, CallArgs& a) {
      Params p("copy", a, {});
      return Value(std::shared_ptr<const DictObj>(d));
    });
  if (n == "pop" || n == "popitem" || n == "setdefault" || n == "update" || n == "clear")
    return Value::unsafe(fmt::format("access to attribute '{}' of 'dict' object is unsafe.", n));
  return std::nullopt;
}

std::optional<Value> list_method(const Value& l, const std::string& n) {
  const char* type = l.type_name();
  auto m = [&](Method fn) { return std::optional<Value>(bound_method(std::string(type) + "." + n, std::move(fn))); };
  if (n == "index" || n == "count")
    return m([l, n](Interpreter&, CallArgs& a) {
      Params p(n, a, {"value"});
      if (!p.has(0)) type_error(fmt::format("{}() takes exactly one argument (0 given)", n));
      int64_t count = 0;
      for (size_t i = 0; i < l.items().size(); ++i)
        if (equals(l.items()[i], *p.at(0))) {
          if (n == "index") return Value(static_cast<int64_t>(i));
          ++count;
        }
      if (n == "index") type_error(fmt::format("{} is not in list", p.at(0)->repr()));
      return Value(count);
    });
  if (!l.is_tuple() && (n == "append" || n == "extend" || n == "insert" || n == "pop" || n == "remove" ||
                        n == "reverse" || n == "sort" || n == "clear" || n == "copy"))
    return n == "copy" ? m([l](Interpreter&, CallArgs&) { return Value::list(l.items()); })
                       : std::optional<Value>(
                             Value::unsafe(fmt::format("access to attribute '{}' of 'list' object is unsafe.", n)));
  return std::nullopt;
}

}  // namespace

std::optional<Value> method_of(const Value& obj, const std::string& name) {
  if (obj.is_string()) return string_method(obj.str_ptr(), name);
  if (obj.is_dict()) return dict_method(obj.dict_ptr(), name);
  if (obj.is_list() && !obj.is_generator()) return list_method(obj, name);
  return std::nullopt;
}

}  // namespace qtune::jinja
