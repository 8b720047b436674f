#pragma once
// A Jinja value as jinja2 sees Python objects: undefined, None, bool, int, float, str, list/tuple, dict (insertion
// order), callables (macros, builtins, bound methods) and namespaces. Strings, lists and dicts are immutable once
// built (transformers renders in jinja2's ImmutableSandboxedEnvironment, where list.append and dict.update are
// refused), so they are shared, not copied; only a namespace changes, through `set ns.attr = ...`.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace qtune::jinja {

class Value;
class Interpreter;

struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
};

struct ListObj;
struct DictObj;
struct NamespaceObj;
struct CallableObj;

class Value {
 public:
  enum class Type { Undefined, None, Bool, Int, Float, String, List, Dict, Callable, Namespace };

  Value() : v_(Undef{}) {}  // undefined
  static Value undefined(std::string hint);  // hint: jinja2's message when it is used ("'x' is undefined")
  // What the sandbox gives for an attribute a template may not use (list.append, _private): an undefined value whose
  // use is a SecurityError.
  static Value unsafe(std::string hint);
  static Value none() { return Value(NoneT{}); }
  Value(bool b) : v_(b) {}                     // NOLINT
  Value(int64_t i) : v_(i) {}                  // NOLINT
  Value(int i) : v_(static_cast<int64_t>(i)) {}  // NOLINT
  Value(double f) : v_(f) {}                   // NOLINT
  Value(std::string s) : v_(std::make_shared<const std::string>(std::move(s))) {}  // NOLINT
  Value(const char* s) : Value(std::string(s)) {}                                  // NOLINT
  Value(std::shared_ptr<const std::string> s) : v_(std::move(s)) {}               // NOLINT
  // markupsafe's Markup (what `|safe` and `|escape` return): a str that escapes the plain str added to it.
  static Value markup(std::string s);
  bool is_markup() const { return markup_; }
  static Value list(std::vector<Value> items, bool tuple = false);
  // What jinja2's map, select, reject, items, unique, batch and reverse return: a Python generator, which is always
  // true, has no length and cannot be indexed, but iterates as a list.
  static Value generator(std::vector<Value> items);
  // A generator whose body failed: jinja2 raises only when it is iterated (printing it does not).
  static Value failed_generator(const std::string& message, int kind);
  static Value dict(std::vector<std::pair<Value, Value>> items);
  Value(std::shared_ptr<const ListObj> l) : v_(std::move(l)) {}      // NOLINT
  Value(std::shared_ptr<const DictObj> d) : v_(std::move(d)) {}      // NOLINT
  Value(std::shared_ptr<CallableObj> c) : v_(std::move(c)) {}        // NOLINT
  Value(std::shared_ptr<NamespaceObj> n) : v_(std::move(n)) {}       // NOLINT

  Type type() const { return static_cast<Type>(v_.index()); }
  bool is_undefined() const { return type() == Type::Undefined; }
  bool is_none() const { return type() == Type::None; }
  bool is_bool() const { return type() == Type::Bool; }
  bool is_int() const { return type() == Type::Int; }
  bool is_float() const { return type() == Type::Float; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }  // Python: bool is an int
  bool is_string() const { return type() == Type::String; }
  bool is_list() const { return type() == Type::List; }  // list or tuple
  bool is_tuple() const;
  bool is_dict() const { return type() == Type::Dict; }
  bool is_callable() const { return type() == Type::Callable; }
  bool is_namespace() const { return type() == Type::Namespace; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const;  // int or bool
  double as_double() const;  // int, bool or float
  const std::string& str() const { return *std::get<StrPtr>(v_); }
  const std::shared_ptr<const std::string>& str_ptr() const { return std::get<StrPtr>(v_); }
  const ListObj& list() const { return *std::get<ListPtr>(v_); }
  const std::vector<Value>& items() const;  // a list's elements
  const DictObj& dict() const { return *std::get<DictPtr>(v_); }
  const std::shared_ptr<const DictObj>& dict_ptr() const { return std::get<DictPtr>(v_); }
  CallableObj& callable() const { return *std::get<CallPtr>(v_); }
  NamespaceObj& ns() const { return *std::get<NsPtr>(v_); }
  const std::string& undefined_hint() const;
  bool undefined_is_unsafe() const;
  bool is_generator() const;

  // Python's truth value (an undefined value is false).
  bool truthy() const;
  // Python's str() of the value as jinja2 prints it ("" for undefined, "None", "True", "1.0", "[1, 'a']").
  std::string to_str() const;
  void append_str(std::string& out) const;
  // Python's repr() (strings quoted), as str() writes the items of a list or dict.
  std::string repr() const;
  // The Python type name jinja2's messages use ("str", "int", "NoneType", "dict", "list" ...).
  const char* type_name() const;

 private:
  struct Undef {
    std::shared_ptr<const std::string> hint;
    bool unsafe = false;
  };
  struct NoneT {};
  using StrPtr = std::shared_ptr<const std::string>;
  using ListPtr = std::shared_ptr<const ListObj>;
  using DictPtr = std::shared_ptr<const DictObj>;
  using CallPtr = std::shared_ptr<CallableObj>;
  using NsPtr = std::shared_ptr<NamespaceObj>;
  explicit Value(NoneT n) : v_(n) {}
  std::variant<Undef, NoneT, bool, int64_t, double, StrPtr, ListPtr, DictPtr, CallPtr, NsPtr> v_;
  bool markup_ = false;
};

// markupsafe's escape: & < > " ' as HTML entities.
std::string html_escape(const std::string& s);

struct ListObj {
  std::vector<Value> items;
  bool tuple = false;
  bool generator = false;
  std::shared_ptr<const std::pair<int, std::string>> deferred_error;  // a failed generator's ErrorKind and message
};

// A dict in insertion order. Lookups are linear over small dicts (messages, tool schemas) and hashed over larger ones.
struct DictObj {
  std::vector<std::pair<Value, Value>> items;
  const Value* find(const Value& key) const;
  const Value* find(const std::string& key) const;
  void set(Value key, Value value);  // only while building one
};

// jinja2's namespace(): attributes a template may assign to from inside loops.
struct NamespaceObj {
  DictObj attrs;
};

// A builtin function, a bound method or a macro.
struct CallableObj {
  std::string name;
  std::function<Value(Interpreter&, CallArgs&)> fn;
  bool is_macro = false;
};

// Python's == (1 == 1.0 == True; [1] != (1,); dicts compare regardless of order; undefined equals undefined).
bool equals(const Value& a, const Value& b);
// Python's <: numbers, strings, and lists/tuples element by element; otherwise a TypeError (thrown as
// TemplateError of kind Type, naming the types).
bool less(const Value& a, const Value& b);

// JSON (messages, tools, extra variables) as Jinja values: objects keep their key order (nlohmann::ordered_json).
Value from_json(const nlohmann::ordered_json& j);

}  // namespace qtune::jinja
