#include "qtune/jinja/filters.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "args.h"
#include "qtune/jinja/evaluator.h"
#include "qtune/jinja/json.h"
#include "qtune/jinja/methods.h"
#include "qtune/jinja/operators.h"
#include "qtune/jinja/pystr.h"

namespace qtune::jinja {
namespace {

[[noreturn]] void type_error(const std::string& m) { throw TemplateError(ErrorKind::Type, m); }

using FilterFn = Value (*)(Interpreter&, const Value&, CallArgs&);

std::string soft_str(const Value& v) { return v.to_str(); }

// jinja2's make_attrgetter: "a.b.0" looks up a, then b, then item 0, each as environment.getitem.
Value get_attribute(Interpreter& in, const Value& item, const Value& attribute, const Value* dflt = nullptr) {
  Value v = item;
  if (attribute.is_number() && !attribute.is_float()) {
    v = in.getitem(v, attribute);
  } else {
    const std::string path = attribute.to_str();
    for (const std::string& part : py::split(path, std::string("."))) {
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
      v = in.getitem(v, digits ? Value(static_cast<int64_t>(std::stoll(part))) : Value(part));
      if (dflt && v.is_undefined()) return *dflt;
    }
  }
  return v;
}

// Lower-cased for comparisons when case_sensitive is off (jinja2's ignore_case).
Value ignore_case(const Value& v) { return v.is_string() ? Value(py::lower(v.str())) : v; }

int64_t py_len(const Value& v) {
  switch (v.type()) {
    case Value::Type::String: return static_cast<int64_t>(py::length(v.str()));
    case Value::Type::List:
      if (v.is_generator()) type_error("object of type 'generator' has no len()");
      return static_cast<int64_t>(v.items().size());
    case Value::Type::Dict: return static_cast<int64_t>(v.dict().items.size());
    case Value::Type::Undefined: return 0;
    case Value::Type::Namespace: type_error("object of type 'Namespace' has no len()");
    default: type_error(fmt::format("object of type '{}' has no len()", v.type_name()));
  }
}

void stable_sort_by(std::vector<Value>& items, const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return reverse ? less(keys[b], keys[a]) : less(keys[a], keys[b]);
  });
  std::vector<Value> sorted;
  sorted.reserve(items.size());
  for (size_t i : order) sorted.push_back(items[i]);
  items = std::move(sorted);
}

// Python's float(str): optional whitespace and sign, digits with single underscores, inf/nan.
bool parse_float(const std::string& text, double& out) {
  std::string s = py::strip(text, std::nullopt);
  std::string clean;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_') {
      if (i == 0 || i + 1 == s.size() || !std::isdigit(static_cast<unsigned char>(s[i - 1])) ||
          !std::isdigit(static_cast<unsigned char>(s[i + 1])))
        return false;
      continue;
    }
    clean += s[i];
  }
  if (clean.empty()) return false;
  std::string body = clean;
  if (body[0] == '+' || body[0] == '-') body = body.substr(1);
  std::string low = py::lower(body);
  if (low == "inf" || low == "infinity" || low == "nan") {
    out = low == "nan" ? NAN : (clean[0] == '-' ? -INFINITY : INFINITY);
    return true;
  }
  for (char c : body)
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'))
      return false;
  char* end = nullptr;
  out = std::strtod(clean.c_str(), &end);
  return end == clean.c_str() + clean.size();
}

// Python's int(str, base).
bool parse_int(const std::string& text, int base, int64_t& out) {
  std::string s = py::strip(text, std::nullopt);
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s = s.substr(1);
  }
  if (base == 16 && s.size() > 2 && s[0] == '0' && (s[1] | 0x20) == 'x') s = s.substr(2);
  if (base == 8 && s.size() > 2 && s[0] == '0' && (s[1] | 0x20) == 'o') s = s.substr(2);
  if (base == 2 && s.size() > 2 && s[0] == '0' && (s[1] | 0x20) == 'b') s = s.substr(2);
  if (s.empty()) return false;
  std::string clean;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_' && i > 0 && i + 1 < s.size() && s[i - 1] != '_') continue;
    clean += s[i];
  }
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(clean.c_str(), &end, base);
  if (end != clean.c_str() + clean.size() || clean[0] == '+' || clean[0] == '-' || clean[0] == ' ') return false;
  if (errno == ERANGE) throw TemplateError(ErrorKind::Unsupported, "integer overflow: qtune's integers are 64-bit");
  out = neg ? -v : v;
  return true;
}

int64_t to_int_arg(const Value& v, const char* what) {
  if (!v.is_number() || v.is_float()) type_error(fmt::format("'{}' must be an integer, not {}", what, v.type_name()));
  return v.as_int();
}

double py_round(double x, int64_t ndigits) {
  if (!std::isfinite(x)) return x;
  if (ndigits == 0) return std::nearbyint(x);
  if (ndigits > 0) {
    if (ndigits > 300) return x;
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(ndigits), x);
    return std::strtod(buf, nullptr);
  }
  const double p = std::pow(10.0, static_cast<double>(-ndigits));
  return std::nearbyint(x / p) * p;
}

// --- the filters ---------------------------------------------------------------------------------

Value f_abs(Interpreter&, const Value& v, CallArgs& a) {
  Params p("abs", a, {});
  if (v.is_float()) return Value(std::fabs(v.as_double()));
  if (v.is_number()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
  type_error(fmt::format("bad operand type for abs(): '{}'", v.type_name()));
}

Value f_attr(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("attr", a, {"name"});
  if (!p.has(0)) type_error("attr() missing 1 required positional argument: 'name'");
  // Python's getattr only: unlike `obj.name`, no fallback to a dict's keys.
  const std::string name = p.get(0, Value()).to_str();
  if (v.is_dict()) {
    if (auto m = method_of(v, name)) return *m;
    return Value::undefined(fmt::format("'dict object' has no attribute '{}'", name));
  }
  return in.getattr(v, name);
}

Value f_batch(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("batch", a, {"linecount", "fill_with"});
  if (!p.has(0)) type_error("batch() missing 1 required positional argument: 'linecount'");
  const int64_t n = to_int_arg(p.get(0, Value()), "linecount");
  if (n <= 0) type_error("batch linecount must be positive");
  std::vector<Value> out, cur;
  for (auto& x : iterate(v)) {
    in.count_iterations(1);
    cur.push_back(x);
    if (static_cast<int64_t>(cur.size()) == n) {
      out.push_back(Value::list(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (p.has(1))
      while (static_cast<int64_t>(cur.size()) < n) cur.push_back(p.get(1, Value()));
    out.push_back(Value::list(std::move(cur)));
  }
  return Value::generator(std::move(out));
}

Value f_capitalize(Interpreter&, const Value& v, CallArgs& a) {
  Params p("capitalize", a, {});
  return Value(py::capitalize(soft_str(v)));
}

Value f_center(Interpreter&, const Value& v, CallArgs& a) {
  Params p("center", a, {"width"});
  const std::string s = soft_str(v);
  const int64_t width = to_int_arg(p.get(0, Value(80)), "width");
  const int64_t len = static_cast<int64_t>(py::length(s));
  if (width <= len) return Value(s);
  const int64_t marg = width - len;
  const int64_t left = marg / 2 + (marg & width & 1);
  return Value(std::string(left, ' ') + s + std::string(marg - left, ' '));
}

Value f_length(Interpreter&, const Value& v, CallArgs& a) {
  Params p("length", a, {});
  return Value(py_len(v));
}

Value f_default(Interpreter&, const Value& v, CallArgs& a) {
  Params p("default", a, {"default_value", "boolean"});
  const Value dflt = p.get(0, Value(std::string()));
  if (v.is_undefined() || (p.get(1, Value(false)).truthy() && !v.truthy())) return dflt;
  return v;
}

Value f_dictsort(Interpreter&, const Value& v, CallArgs& a) {
  Params p("dictsort", a, {"case_sensitive", "by", "reverse"});
  if (!v.is_dict()) type_error(fmt::format("'{}' object has no attribute 'items'", v.type_name()));
  const bool cs = p.get(0, Value(false)).truthy();
  const std::string by = p.get(1, Value("key")).to_str();
  int pos;
  if (by == "key") pos = 0;
  else if (by == "value") pos = 1;
  else throw TemplateError(ErrorKind::Type, "You can only sort by either \"key\" or \"value\"");
  std::vector<Value> items, keys;
  for (const auto& [k, x] : v.dict().items) {
    items.push_back(Value::list({k, x}, true));
    const Value& key = pos == 0 ? k : x;
    keys.push_back(cs ? key : ignore_case(key));
  }
  stable_sort_by(items, keys, p.get(2, Value(false)).truthy());
  return Value::list(std::move(items));
}

Value f_escape(Interpreter&, const Value& v, CallArgs& a) {
  Params p("escape", a, {});
  if (v.is_markup()) return v;
  return Value::markup(html_escape(soft_str(v)));
}

Value f_first(Interpreter&, const Value& v, CallArgs& a) {
  Params p("first", a, {});
  const auto items = iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Interpreter&, const Value& v, CallArgs& a) {
  Params p("last", a, {});
  if (v.is_generator()) type_error("'generator' object is not reversible");
  const auto items = iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value f_float(Interpreter&, const Value& v, CallArgs& a) {
  Params p("float", a, {"default"});
  const Value dflt = p.get(0, Value(0.0));
  if (v.is_undefined()) undefined_error(v);  // Undefined.__float__ raises
  if (v.is_number()) return Value(v.as_double());
  double d;
  if (v.is_string() && parse_float(v.str(), d)) return Value(d);
  return dflt;
}

Value f_format(Interpreter&, const Value& v, CallArgs& a) {
  Params p("format", a, {}, true, true);
  if (!p.kwargs().empty() && !p.rest().empty())
    type_error("can't handle positional and keyword arguments at the same time");
  if (!p.kwargs().empty()) {
    std::vector<std::pair<Value, Value>> d;
    for (auto& [k, x] : p.kwargs()) d.emplace_back(Value(k), x);
    return Value(percent_format(soft_str(v), Value::dict(std::move(d))));
  }
  return Value(percent_format(soft_str(v), Value::list(p.rest(), true)));
}

Value f_indent(Interpreter&, const Value& v, CallArgs& a) {
  Params p("indent", a, {"width", "first", "blank"});
  const Value w = p.get(0, Value(4));
  const std::string indention = w.is_string() ? w.str() : std::string(static_cast<size_t>(std::max<int64_t>(0, to_int_arg(w, "width"))), ' ');
  std::string s = soft_str(v) + "\n";
  std::vector<std::string> lines = py::splitlines(s);
  std::string rv;
  if (p.get(2, Value(false)).truthy()) {
    for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + indention : "") + lines[i];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) rv += "\n" + (lines[i].empty() ? lines[i] : indention + lines[i]);
  }
  if (p.get(1, Value(false)).truthy()) rv = indention + rv;
  return Value(std::move(rv));
}

Value f_int(Interpreter&, const Value& v, CallArgs& a) {
  Params p("int", a, {"default", "base"});
  const Value dflt = p.get(0, Value(0));
  const int64_t base = to_int_arg(p.get(1, Value(10)), "base");
  if (v.is_undefined()) undefined_error(v);  // Undefined.__int__ raises
  if (v.is_float()) {
    const double d = v.as_double();
    if (!std::isfinite(d)) return dflt;
    if (std::fabs(d) >= 9.2e18) throw TemplateError(ErrorKind::Unsupported, "integer overflow: qtune's integers are 64-bit");
    return Value(static_cast<int64_t>(std::trunc(d)));
  }
  if (v.is_number()) return Value(v.as_int());
  if (v.is_string()) {
    int64_t i;
    if (parse_int(v.str(), static_cast<int>(base), i)) return Value(i);
    double d;
    if (parse_float(v.str(), d) && std::isfinite(d)) {
      if (std::fabs(d) >= 9.2e18) throw TemplateError(ErrorKind::Unsupported, "integer overflow: qtune's integers are 64-bit");
      return Value(static_cast<int64_t>(std::trunc(d)));
    }
  }
  return dflt;
}

Value f_items(Interpreter&, const Value& v, CallArgs& a) {
  Params p("items", a, {});
  if (v.is_undefined()) return Value::generator({});
  if (!v.is_dict()) type_error("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, x] : v.dict().items) out.push_back(Value::list({k, x}, true));
  return Value::generator(std::move(out));
}

Value f_join(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("join", a, {"d", "attribute"});
  const std::string sep = p.get(0, Value(std::string())).to_str();
  std::string out;
  bool first = true;
  for (const auto& x : iterate(v)) {
    if (!first) out += sep;
    first = false;
    (p.has(1) ? get_attribute(in, x, *p.at(1)) : x).append_str(out);
    in.check_size(out.size());
  }
  return Value(std::move(out));
}

Value f_list(Interpreter&, const Value& v, CallArgs& a) {
  Params p("list", a, {});
  return Value::list(iterate(v));
}

Value f_lower(Interpreter&, const Value& v, CallArgs& a) {
  Params p("lower", a, {});
  return Value(py::lower(soft_str(v)));
}

Value f_upper(Interpreter&, const Value& v, CallArgs& a) {
  Params p("upper", a, {});
  return Value(py::upper(soft_str(v)));
}

Value f_map(Interpreter& in, const Value& v, CallArgs& a) {
  std::vector<Value> out;
  // jinja2's map and select family skip a false value (None, an empty list) without iterating it.
  const auto items = v.truthy() ? iterate(v) : std::vector<Value>();
  if (a.args.empty()) {
    Params p("map", a, {"attribute", "default"});
    if (!p.has(0)) type_error("map requires a filter argument");
    for (const auto& x : items) {
      in.count_iterations(1);
      Value r = get_attribute(in, x, *p.at(0));
      if (r.is_undefined() && p.has(1)) r = *p.at(1);
      out.push_back(std::move(r));
    }
    return Value::generator(std::move(out));
  }
  const std::string name = a.args[0].to_str();
  CallArgs rest;
  rest.args.assign(a.args.begin() + 1, a.args.end());
  rest.kwargs = a.kwargs;
  for (const auto& x : items) {
    in.count_iterations(1);
    CallArgs call = rest;
    out.push_back(in.filter(name, x, call));
  }
  return Value::generator(std::move(out));
}

Value min_max(Interpreter& in, const Value& v, CallArgs& a, bool max) {
  Params p(max ? "max" : "min", a, {"case_sensitive", "attribute"});
  const bool cs = p.get(0, Value(false)).truthy();
  const auto items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  size_t best = 0;
  Value best_key;
  for (size_t i = 0; i < items.size(); ++i) {
    Value k = p.has(1) ? get_attribute(in, items[i], *p.at(1)) : items[i];
    if (!cs) k = ignore_case(k);
    if (i == 0 || (max ? less(best_key, k) : less(k, best_key))) {
      best = i;
      best_key = k;
    }
  }
  return items[best];
}
Value f_max(Interpreter& in, const Value& v, CallArgs& a) { return min_max(in, v, a, true); }
Value f_min(Interpreter& in, const Value& v, CallArgs& a) { return min_max(in, v, a, false); }

Value f_replace(Interpreter&, const Value& v, CallArgs& a) {
  Params p("replace", a, {"old", "new", "count"});
  if (!p.has(0) || !p.has(1)) type_error("replace() missing required arguments 'old' and 'new'");
  const Value c = p.get(2, Value::none());
  const int64_t count = c.is_none() ? -1 : to_int_arg(c, "count");
  return Value(py::replace(soft_str(v), p.get(0, Value()).to_str(), p.get(1, Value()).to_str(), count));
}

Value f_reverse(Interpreter&, const Value& v, CallArgs& a) {
  Params p("reverse", a, {});
  if (v.is_string()) return slice(v, std::nullopt, std::nullopt, -1);
  auto items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::generator(std::move(items));
}

Value f_round(Interpreter&, const Value& v, CallArgs& a) {
  Params p("round", a, {"precision", "method"});
  const int64_t precision = to_int_arg(p.get(0, Value(0)), "precision");
  const std::string method = p.get(1, Value("common")).to_str();
  if (method != "common" && method != "ceil" && method != "floor")
    type_error("method must be common, ceil or floor");
  if (v.is_undefined()) undefined_error(v);
  if (!v.is_number()) type_error(fmt::format("type {} doesn't define __round__ method", v.type_name()));
  if (method == "common") {
    if (!v.is_float()) {
      if (precision >= 0) return Value(v.as_int());
      return Value(static_cast<int64_t>(py_round(static_cast<double>(v.as_int()), precision)));
    }
    return Value(py_round(v.as_double(), precision));
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.as_double() * scale;
  return Value((method == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
}

Value select_impl(Interpreter& in, const Value& v, CallArgs& a, bool select, bool by_attr) {
  const char* fn = select ? (by_attr ? "selectattr" : "select") : (by_attr ? "rejectattr" : "reject");
  std::vector<Value> args = a.args;
  if (!a.kwargs.empty()) type_error(fmt::format("{}() got an unexpected keyword argument '{}'", fn, a.kwargs[0].first));
  Value attr;
  if (by_attr) {
    if (args.empty()) type_error(fmt::format("{}() missing the attribute argument", fn));
    attr = args[0];
    args.erase(args.begin());
  }
  std::string test;
  if (!args.empty()) {
    test = args[0].to_str();
    args.erase(args.begin());
  }
  std::vector<Value> out;
  for (const auto& x : v.truthy() ? iterate(v) : std::vector<Value>()) {
    in.count_iterations(1);
    const Value subject = by_attr ? get_attribute(in, x, attr) : x;
    bool ok;
    if (test.empty()) {
      ok = subject.truthy();
    } else {
      CallArgs call;
      call.args = args;
      ok = in.test(test, subject, call);
    }
    if (ok == select) out.push_back(x);
  }
  return Value::generator(std::move(out));
}
Value f_select(Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, true, false); }
Value f_reject(Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, false, false); }
Value f_selectattr(Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, true, true); }
Value f_rejectattr(Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, false, true); }

Value f_safe(Interpreter&, const Value& v, CallArgs& a) {
  Params p("safe", a, {});
  return Value::markup(soft_str(v));
}

Value f_slice(Interpreter&, const Value& v, CallArgs& a) {
  Params p("slice", a, {"slices", "fill_with"});
  const auto seq = iterate(v);
  const int64_t slices = to_int_arg(p.get(0, Value(1)), "slices");
  if (slices <= 0) type_error("slices must be positive");
  const int64_t length = static_cast<int64_t>(seq.size());
  const int64_t items_per = length / slices, with_extra = length % slices;
  int64_t offset = 0;
  std::vector<Value> out;
  for (int64_t i = 0; i < slices; ++i) {
    const int64_t start = offset + i * items_per;
    if (i < with_extra) ++offset;
    const int64_t end = offset + (i + 1) * items_per;
    std::vector<Value> part(seq.begin() + start, seq.begin() + end);
    if (p.has(1) && i >= with_extra) part.push_back(*p.at(1));
    out.push_back(Value::list(std::move(part)));
  }
  return Value::generator(std::move(out));
}

Value f_sort(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("sort", a, {"reverse", "case_sensitive", "attribute"});
  auto items = iterate(v);
  const bool cs = p.get(1, Value(false)).truthy();
  std::vector<Value> keys;
  for (const auto& x : items) {
    Value k = p.has(2) ? get_attribute(in, x, *p.at(2)) : x;
    keys.push_back(cs ? k : ignore_case(k));
  }
  stable_sort_by(items, keys, p.get(0, Value(false)).truthy());
  return Value::list(std::move(items));
}

Value f_string(Interpreter&, const Value& v, CallArgs& a) {
  Params p("string", a, {});
  return Value(soft_str(v));
}

Value f_sum(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("sum", a, {"attribute", "start"});
  Value total = p.get(1, Value(0));
  for (const auto& x : iterate(v)) {
    const Value item = p.has(0) ? get_attribute(in, x, *p.at(0)) : x;
    if (item.is_string() || total.is_string())
      type_error(fmt::format("unsupported operand type(s) for +: '{}' and '{}'", total.type_name(), item.type_name()));
    total = binary_op(Expr::Kind::Add, total, item, SIZE_MAX);
  }
  return total;
}

Value f_title(Interpreter&, const Value& v, CallArgs& a) {
  Params p("title", a, {});
  // jinja2: words split at runs of [-\s({\[<], each word's first character upper-cased and the rest lower-cased.
  const std::u32string s = py::decode(soft_str(v));
  auto delim = [](char32_t c) { return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py::isspace(c); };
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    const bool d = delim(s[i]);
    while (j < s.size() && delim(s[j]) == d) ++j;
    const std::string part = py::encode(s.substr(i, j - i));
    if (d) {
      out += part;
    } else {
      std::string first;
      py::append_utf8(first, s[i]);
      out += py::upper(first) + py::lower(py::encode(s.substr(i + 1, j - i - 1)));
    }
    i = j;
  }
  return Value(std::move(out));
}

Value f_tojson(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions o;
  o.ensure_ascii = p.get(0, Value(false)).truthy();
  const Value indent = p.get(1, Value::none());
  if (indent.is_string()) o.indent = indent.str();
  else if (indent.is_number() && !indent.is_float()) o.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, indent.as_int())), ' ');
  else if (!indent.is_none()) type_error("indent must be an int or a string");
  const Value seps = p.get(2, Value::none());
  if (seps.is_list() && seps.items().size() == 2) o.separators = std::make_pair(seps.items()[0].to_str(), seps.items()[1].to_str());
  else if (!seps.is_none()) type_error("separators must be a (item_separator, key_separator) pair");
  o.sort_keys = p.get(3, Value(false)).truthy();
  std::string s = to_json(v, o);
  in.check_size(s.size());
  return Value(std::move(s));
}

Value f_trim(Interpreter&, const Value& v, CallArgs& a) {
  Params p("trim", a, {"chars"});
  const Value chars = p.get(0, Value::none());
  return Value(py::strip(soft_str(v), chars.is_none() ? std::nullopt : std::optional<std::string>(chars.to_str())));
}

Value f_unique(Interpreter& in, const Value& v, CallArgs& a) {
  Params p("unique", a, {"case_sensitive", "attribute"});
  const bool cs = p.get(0, Value(false)).truthy();
  std::vector<Value> out, seen;
  for (const auto& x : iterate(v)) {
    in.count_iterations(1);
    Value k = p.has(1) ? get_attribute(in, x, *p.at(1)) : x;
    if (!cs) k = ignore_case(k);
    if (k.is_list() && !k.is_tuple()) type_error("unhashable type: 'list'");
    if (k.is_dict()) type_error("unhashable type: 'dict'");
    bool dup = false;
    for (const auto& s : seen)
      if (equals(s, k)) {
        dup = true;
        break;
      }
    if (dup) continue;
    seen.push_back(k);
    out.push_back(x);
  }
  return Value::generator(std::move(out));
}

Value f_wordcount(Interpreter&, const Value& v, CallArgs& a) {
  Params p("wordcount", a, {});
  const std::u32string s = py::decode(soft_str(v));
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : s) {
    std::string one;
    py::append_utf8(one, c);
    const bool w = c == '_' || py::isalnum(one);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value(n);
}

// jinja2's generator filters run their body only when the result is iterated: an error there waits until then.
template <FilterFn F>
Value lazily(Interpreter& in, const Value& v, CallArgs& a) {
  try {
    return F(in, v, a);
  } catch (const TemplateError& e) {
    if (e.kind() == ErrorKind::Limit) throw;
    return Value::failed_generator(e.message(), static_cast<int>(e.kind()));
  }
}

const std::map<std::string, FilterFn>& table() {
  static const std::map<std::string, FilterFn> t = {
      {"abs", f_abs},         {"attr", f_attr},           {"batch", lazily<f_batch>},
      {"capitalize", f_capitalize}, {"center", f_center}, {"count", f_length},
      {"d", f_default},       {"default", f_default},     {"dictsort", f_dictsort},
      {"e", f_escape},        {"escape", f_escape},       {"first", f_first},
      {"float", f_float},     {"forceescape", f_escape},  {"format", f_format},
      {"indent", f_indent},   {"int", f_int},             {"items", lazily<f_items>},
      {"join", f_join},       {"last", f_last},           {"length", f_length},
      {"list", f_list},       {"lower", f_lower},         {"map", lazily<f_map>},
      {"max", f_max},         {"min", f_min},             {"reject", lazily<f_reject>},
      {"rejectattr", lazily<f_rejectattr>}, {"replace", f_replace}, {"reverse", f_reverse},
      {"round", f_round},     {"safe", f_safe},           {"select", lazily<f_select>},
      {"selectattr", lazily<f_selectattr>}, {"slice", lazily<f_slice>},   {"sort", f_sort},
      {"string", f_string},   {"sum", f_sum},             {"title", f_title},
      {"tojson", f_tojson},   {"trim", f_trim},           {"unique", lazily<f_unique>},
      {"upper", f_upper},     {"wordcount", f_wordcount},
  };
  return t;
}

// jinja2's builtin filters qtune does not implement: a template using one is refused where it runs.
const char* const kUnimplemented[] = {"filesizeformat", "groupby", "pprint", "random", "striptags", "truncate",
                                      "urlencode", "urlize", "wordwrap", "xmlattr"};

}  // namespace

Support filter_support(const std::string& name) {
  if (table().count(name)) return Support::Implemented;
  for (const char* u : kUnimplemented)
    if (name == u) return Support::Unimplemented;
  return Support::Unknown;
}

Value apply_filter(Interpreter& in, const std::string& name, const Value& subject, CallArgs& args) {
  const auto it = table().find(name);
  if (it != table().end()) return it->second(in, subject, args);
  if (filter_support(name) == Support::Unimplemented)
    throw TemplateError(ErrorKind::Unsupported,
                        fmt::format("the '{}' filter is not supported by qtune's Jinja interpreter", name));
  throw TemplateError(ErrorKind::Syntax, fmt::format("No filter named '{}' found.", name));
}

}  // namespace qtune::jinja
