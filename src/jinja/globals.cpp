#include "qtune/jinja/globals.h"

#include <ctime>
#include <map>

#include "args.h"
#include "qtune/jinja/evaluator.h"
#include "qtune/jinja/operators.h"

namespace qtune::jinja {
namespace {

[[noreturn]] void type_error(const std::string& m) { throw TemplateError(ErrorKind::Type, m); }

// jinja2's sandbox refuses ranges longer than this (MAX_RANGE).
constexpr int64_t kMaxRange = 100000;

Value fn(const char* name, std::function<Value(Interpreter&, CallArgs&)> f) {
  auto c = std::make_shared<CallableObj>();
  c->name = name;
  c->fn = std::move(f);
  return Value(c);
}

int64_t int_arg(const Value& v) {
  if (v.is_undefined()) undefined_error(v);
  if (!v.is_number() || v.is_float())
    type_error(fmt::format("'{}' object cannot be interpreted as an integer", v.type_name()));
  return v.as_int();
}

Value range(Interpreter& in, CallArgs& a) {
  if (!a.kwargs.empty()) type_error("range() takes no keyword arguments");
  if (a.args.empty() || a.args.size() > 3)
    type_error(fmt::format("range expected at most 3 arguments, got {}", a.args.size()));
  int64_t start = 0, stop, step = 1;
  if (a.args.size() == 1) {
    stop = int_arg(a.args[0]);
  } else {
    start = int_arg(a.args[0]);
    stop = int_arg(a.args[1]);
    if (a.args.size() == 3) step = int_arg(a.args[2]);
  }
  if (step == 0) type_error("range() arg 3 must not be zero");
  int64_t n = 0;
  if (step > 0 && stop > start) n = (stop - start + step - 1) / step;
  if (step < 0 && stop < start) n = (start - stop - step - 1) / -step;
  if (n > kMaxRange)
    type_error("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  in.count_iterations(n);
  std::vector<Value> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.emplace_back(start + i * step);
  return Value::list(std::move(out));
}

// dict(*args, **kwargs) and namespace(*args, **kwargs): a mapping or pairs, then keywords.
std::vector<std::pair<Value, Value>> dict_items(const char* name, CallArgs& a) {
  std::vector<std::pair<Value, Value>> items;
  auto put = [&](Value k, Value v) {
    for (auto& kv : items)
      if (equals(kv.first, k)) {
        kv.second = std::move(v);
        return;
      }
    items.emplace_back(std::move(k), std::move(v));
  };
  if (a.args.size() > 1) type_error(fmt::format("{} expected at most 1 argument, got {}", name, a.args.size()));
  if (a.args.size() == 1) {
    const Value& src = a.args[0];
    if (src.is_dict()) {
      for (const auto& [k, v] : src.dict().items) put(k, v);
    } else if (src.is_namespace()) {
      for (const auto& [k, v] : src.ns().attrs.items) put(k, v);
    } else {
      for (const auto& pair : iterate(src)) {
        const auto kv = iterate(pair);
        if (kv.size() != 2)
          type_error(fmt::format("dictionary update sequence element has length {}; 2 is required", kv.size()));
        put(kv[0], kv[1]);
      }
    }
  }
  for (auto& [k, v] : a.kwargs) put(Value(k), v);
  return items;
}

const std::map<std::string, Value>& table() {
  static const std::map<std::string, Value> t = {
      {"range", fn("range", range)},
      {"dict", fn("dict", [](Interpreter&, CallArgs& a) { return Value::dict(dict_items("dict", a)); })},
      {"namespace", fn("namespace",
                       [](Interpreter&, CallArgs& a) {
                         auto ns = std::make_shared<NamespaceObj>();
                         for (auto& [k, v] : dict_items("namespace", a)) {
                           if (k.is_string() && !k.str().empty() && k.str()[0] == '_')
                             throw TemplateError(ErrorKind::Security,
                                                 fmt::format("Chat templates cannot store underscore-prefixed "
                                                             "attributes on a namespace, but got {}.", k.repr()));
                           ns->attrs.items.emplace_back(std::move(k), std::move(v));
                         }
                         return Value(ns);
                       })},
      {"raise_exception", fn("raise_exception",
                             [](Interpreter&, CallArgs& a) -> Value {
                               Params p("raise_exception", a, {"message"});
                               throw TemplateError(ErrorKind::Raised, p.get(0, Value()).to_str());
                             })},
      {"strftime_now", fn("strftime_now",
                          [](Interpreter&, CallArgs& a) {
                            Params p("strftime_now", a, {"format"});
                            if (!p.has(0)) type_error("strftime_now() missing 1 required positional argument: 'format'");
                            const std::string f = p.at(0)->to_str();
                            const std::time_t now = std::time(nullptr);
                            std::tm local{};
                            localtime_r(&now, &local);
                            std::string out(256 + f.size() * 8, '\0');
                            const size_t n = f.empty() ? 0 : std::strftime(out.data(), out.size(), f.c_str(), &local);
                            out.resize(n);
                            return Value(std::move(out));
                          })},
      {"joiner", fn("joiner",
                    [](Interpreter&, CallArgs& a) {
                      Params p("joiner", a, {"sep"});
                      auto used = std::make_shared<bool>(false);
                      const std::string sep = p.get(0, Value(", ")).to_str();
                      return fn("joiner", [used, sep](Interpreter&, CallArgs&) {
                        if (!*used) {
                          *used = true;
                          return Value(std::string());
                        }
                        return Value(sep);
                      });
                    })},
  };
  return t;
}

}  // namespace

std::optional<Value> global_function(const std::string& name) {
  const auto it = table().find(name);
  if (it == table().end()) return std::nullopt;
  return it->second;
}

}  // namespace qtune::jinja
