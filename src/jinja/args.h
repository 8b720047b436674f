#pragma once
// Binding a builtin's call arguments to its Python signature (positional, then by keyword), with Python's errors.
#include <initializer_list>
#include <string>
#include <vector>

#include "qtune/jinja/error.h"
#include "qtune/jinja/value.h"

namespace qtune::jinja {

class Params {
 public:
  // `names` are the parameters after the subject; extra positional arguments go to rest() when `variadic`.
  Params(const std::string& fn, CallArgs& a, std::initializer_list<const char*> names, bool variadic = false,
         bool extra_kwargs = false)
      : names_(names), values_(names.size()) {
    size_t i = 0;
    for (; i < a.args.size() && i < names_.size(); ++i) values_[i] = &a.args[i];
    for (; i < a.args.size(); ++i) {
      if (!variadic)
        throw TemplateError(ErrorKind::Type, fmt::format("{}() takes at most {} argument(s) ({} given)", fn,
                                                         names_.size(), a.args.size()));
      rest_.push_back(a.args[i]);
    }
    for (auto& [k, v] : a.kwargs) {
      size_t j = 0;
      while (j < names_.size() && k != names_[j]) ++j;
      if (j == names_.size()) {
        if (extra_kwargs) {
          kwargs_.emplace_back(k, v);
          continue;
        }
        throw TemplateError(ErrorKind::Type, fmt::format("{}() got an unexpected keyword argument '{}'", fn, k));
      }
      if (values_[j])
        throw TemplateError(ErrorKind::Type, fmt::format("{}() got multiple values for argument '{}'", fn, k));
      values_[j] = &v;
    }
  }
  bool has(size_t i) const { return values_[i] != nullptr; }
  Value get(size_t i, Value fallback) const { return values_[i] ? *values_[i] : std::move(fallback); }
  const Value* at(size_t i) const { return values_[i]; }
  std::vector<Value>& rest() { return rest_; }
  std::vector<std::pair<std::string, Value>>& kwargs() { return kwargs_; }

 private:
  std::vector<const char*> names_;
  std::vector<const Value*> values_;
  std::vector<Value> rest_;
  std::vector<std::pair<std::string, Value>> kwargs_;
};

}  // namespace qtune::jinja
