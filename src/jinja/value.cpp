#include "qtune/jinja/value.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "qtune/jinja/error.h"
#include "qtune/jinja/pystr.h"

namespace qtune::jinja {
namespace {

const std::string kEmpty;

void append_repr(std::string& out, const Value& v);

void append_items(std::string& out, const Value& v) {
  const auto& l = v.list();
  out += l.tuple ? '(' : '[';
  for (size_t i = 0; i < l.items.size(); ++i) {
    if (i) out += ", ";
    append_repr(out, l.items[i]);
  }
  if (l.tuple && l.items.size() == 1) out += ',';
  out += l.tuple ? ')' : ']';
}

void append_dict(std::string& out, const DictObj& d) {
  out += '{';
  for (size_t i = 0; i < d.items.size(); ++i) {
    if (i) out += ", ";
    append_repr(out, d.items[i].first);
    out += ": ";
    append_repr(out, d.items[i].second);
  }
  out += '}';
}

void append_repr(std::string& out, const Value& v) {
  switch (v.type()) {
    case Value::Type::Undefined: out += "Undefined"; break;
    case Value::Type::String: out += py::repr(v.str()); break;
    default: v.append_str(out);
  }
}

}  // namespace

Value Value::undefined(std::string hint) {
  Value v;
  std::get<Undef>(v.v_).hint = std::make_shared<const std::string>(std::move(hint));
  return v;
}

Value Value::markup(std::string s) {
  Value v(std::move(s));
  v.markup_ = true;
  return v;
}

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

Value Value::unsafe(std::string hint) {
  Value v = undefined(std::move(hint));
  std::get<Undef>(v.v_).unsafe = true;
  return v;
}

bool Value::undefined_is_unsafe() const { return std::get<Undef>(v_).unsafe; }

bool Value::is_generator() const { return is_list() && list().generator; }

Value Value::generator(std::vector<Value> items) {
  auto l = std::make_shared<ListObj>();
  l->items = std::move(items);
  l->generator = true;
  return Value(std::shared_ptr<const ListObj>(std::move(l)));
}

Value Value::failed_generator(const std::string& message, int kind) {
  auto l = std::make_shared<ListObj>();
  l->generator = true;
  l->deferred_error = std::make_shared<const std::pair<int, std::string>>(kind, message);
  return Value(std::shared_ptr<const ListObj>(std::move(l)));
}

Value Value::list(std::vector<Value> items, bool tuple) {
  auto l = std::make_shared<ListObj>();
  l->items = std::move(items);
  l->tuple = tuple;
  return Value(std::shared_ptr<const ListObj>(std::move(l)));
}

Value Value::dict(std::vector<std::pair<Value, Value>> items) {
  auto d = std::make_shared<DictObj>();
  for (auto& [k, v] : items) d->set(std::move(k), std::move(v));
  return Value(std::shared_ptr<const DictObj>(std::move(d)));
}

bool Value::is_tuple() const { return is_list() && list().tuple; }

int64_t Value::as_int() const { return is_bool() ? static_cast<int64_t>(as_bool()) : std::get<int64_t>(v_); }

double Value::as_double() const {
  if (is_float()) return std::get<double>(v_);
  return static_cast<double>(as_int());
}

const std::vector<Value>& Value::items() const { return list().items; }

const std::string& Value::undefined_hint() const {
  const auto& h = std::get<Undef>(v_).hint;
  return h ? *h : kEmpty;
}

bool Value::truthy() const {
  switch (type()) {
    case Type::Undefined:
    case Type::None: return false;
    case Type::Bool: return as_bool();
    case Type::Int: return as_int() != 0;
    case Type::Float: return as_double() != 0.0;
    case Type::String: return !str().empty();
    case Type::List: return list().generator || !items().empty();
    case Type::Dict: return !dict().items.empty();
    case Type::Callable:
    case Type::Namespace: return true;
  }
  return false;
}

void Value::append_str(std::string& out) const {
  switch (type()) {
    case Type::Undefined: break;
    case Type::None: out += "None"; break;
    case Type::Bool: out += as_bool() ? "True" : "False"; break;
    case Type::Int: out += std::to_string(as_int()); break;
    case Type::Float: out += py::float_repr(as_double()); break;
    case Type::String: out += str(); break;
    case Type::List:
      if (list().generator) out += "<generator object>";
      else append_items(out, *this);
      break;
    case Type::Dict: append_dict(out, dict()); break;
    case Type::Callable: out += "<function " + callable().name + ">"; break;
    case Type::Namespace:
      out += "<Namespace ";
      append_dict(out, ns().attrs);
      out += ">";
      break;
  }
}

std::string Value::to_str() const {
  if (is_string()) return str();
  std::string out;
  append_str(out);
  return out;
}

std::string Value::repr() const {
  std::string out;
  append_repr(out, *this);
  return out;
}

const char* Value::type_name() const {
  switch (type()) {
    case Type::Undefined: return "Undefined";
    case Type::None: return "NoneType";
    case Type::Bool: return "bool";
    case Type::Int: return "int";
    case Type::Float: return "float";
    case Type::String: return "str";
    case Type::List: return list().generator ? "generator" : list().tuple ? "tuple" : "list";
    case Type::Dict: return "dict";
    case Type::Callable: return "function";
    case Type::Namespace: return "Namespace";
  }
  return "object";
}

namespace {
// Above this many keys a dict keeps no index; lookups stay linear below it, where they are fastest anyway.
bool string_key_equals(const Value& k, const std::string& key) { return k.is_string() && k.str() == key; }
}  // namespace

const Value* DictObj::find(const std::string& key) const {
  for (const auto& [k, v] : items)
    if (string_key_equals(k, key)) return &v;
  return nullptr;
}

const Value* DictObj::find(const Value& key) const {
  if (key.is_string()) return find(key.str());
  for (const auto& [k, v] : items)
    if (equals(k, key)) return &v;
  return nullptr;
}

void DictObj::set(Value key, Value value) {
  for (auto& [k, v] : items)
    if (equals(k, key)) {
      v = std::move(value);
      return;
    }
  items.emplace_back(std::move(key), std::move(value));
}

bool equals(const Value& a, const Value& b) {
  using T = Value::Type;
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case T::Undefined:
    case T::None: return true;
    case T::String: return a.str() == b.str();
    case T::List: {
      if (a.list().generator || b.list().generator) return &a.list() == &b.list();
      if (a.list().tuple != b.list().tuple || a.items().size() != b.items().size()) return false;
      for (size_t i = 0; i < a.items().size(); ++i)
        if (!equals(a.items()[i], b.items()[i])) return false;
      return true;
    }
    case T::Dict: {
      const auto& da = a.dict();
      const auto& db = b.dict();
      if (da.items.size() != db.items.size()) return false;
      for (const auto& [k, v] : da.items) {
        const Value* o = db.find(k);
        if (!o || !equals(v, *o)) return false;
      }
      return true;
    }
    case T::Callable: return &a.callable() == &b.callable();
    case T::Namespace: return &a.ns() == &b.ns();
    default: return false;
  }
}

bool less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str();  // UTF-8 byte order is code point order
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equals(x[i], y[i])) continue;
      return less(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  throw TemplateError(ErrorKind::Type, fmt::format("'<' not supported between instances of '{}' and '{}'",
                                                   a.type_name(), b.type_name()));
}

Value from_json(const nlohmann::ordered_json& j) {
  using J = nlohmann::ordered_json::value_t;
  switch (j.type()) {
    case J::null: return Value::none();
    case J::boolean: return Value(j.get<bool>());
    case J::number_integer: return Value(j.get<int64_t>());
    case J::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case J::number_float: return Value(j.get<double>());
    case J::string: return Value(j.get<std::string>());
    case J::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::list(std::move(items));
    }
    case J::object: {
      auto d = std::make_shared<DictObj>();
      d->items.reserve(j.size());
      for (const auto& [k, v] : j.items()) d->items.emplace_back(Value(k), from_json(v));
      return Value(std::shared_ptr<const DictObj>(std::move(d)));
    }
    default: return Value::none();
  }
}

}  // namespace qtune::jinja
