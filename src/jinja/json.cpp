#include "qtune/jinja/json.h"

#include <algorithm>
#include <cmath>

#include "qtune/jinja/error.h"
#include "qtune/jinja/pystr.h"

namespace qtune::jinja {
namespace {

void escape(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else if (c >= 0x80 && ensure_ascii) {
          size_t j = i;
          const std::u32string one = py::decode(std::string_view(s).substr(i, c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2));
          j += c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
          char32_t cp = one.empty() ? 0xFFFD : one[0];
          if (cp >= 0x10000) {
            cp -= 0x10000;
            out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
          } else {
            out += fmt::format("\\u{:04x}", static_cast<unsigned>(cp));
          }
          i = j - 1;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

std::string float_json(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return py::float_repr(d);
}

class Writer {
 public:
  explicit Writer(const JsonOptions& o) : o_(o) {
    if (o.separators) {
      item_sep_ = o.separators->first;
      key_sep_ = o.separators->second;
    } else {
      item_sep_ = o.indent ? "," : ", ";
      key_sep_ = ": ";
    }
  }

  void write(std::string& out, const Value& v, int level) {
    if (level > 500) throw TemplateError(ErrorKind::Limit, "tojson: nested deeper than 500 levels");
    switch (v.type()) {
      case Value::Type::None: out += "null"; break;
      case Value::Type::Bool: out += v.as_bool() ? "true" : "false"; break;
      case Value::Type::Int: out += std::to_string(v.as_int()); break;
      case Value::Type::Float: out += float_json(v.as_double()); break;
      case Value::Type::String: escape(out, v.str(), o_.ensure_ascii); break;
      case Value::Type::List: {
        if (v.is_generator()) not_serializable(v);
        const auto& items = v.items();
        if (items.empty()) {
          out += "[]";
          break;
        }
        out += '[';
        for (size_t i = 0; i < items.size(); ++i) {
          if (i) out += item_sep_;
          newline(out, level + 1);
          write(out, items[i], level + 1);
        }
        newline(out, level);
        out += ']';
        break;
      }
      case Value::Type::Dict: {
        const auto& d = v.dict();
        if (d.items.empty()) {
          out += "{}";
          break;
        }
        std::vector<std::pair<std::string, const Value*>> entries;
        entries.reserve(d.items.size());
        for (const auto& [k, x] : d.items) entries.emplace_back(key_text(k), &x);
        if (o_.sort_keys)
          std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        out += '{';
        for (size_t i = 0; i < entries.size(); ++i) {
          if (i) out += item_sep_;
          newline(out, level + 1);
          escape(out, entries[i].first, o_.ensure_ascii);
          out += key_sep_;
          write(out, *entries[i].second, level + 1);
        }
        newline(out, level);
        out += '}';
        break;
      }
      default: not_serializable(v);
    }
  }

 private:
  [[noreturn]] static void not_serializable(const Value& v) {
    throw TemplateError(ErrorKind::Type, fmt::format("Object of type {} is not JSON serializable", v.type_name()));
  }

  static std::string key_text(const Value& k) {
    switch (k.type()) {
      case Value::Type::String: return k.str();
      case Value::Type::Int: return std::to_string(k.as_int());
      case Value::Type::Bool: return k.as_bool() ? "true" : "false";
      case Value::Type::None: return "null";
      case Value::Type::Float: return float_json(k.as_double());
      default:
        throw TemplateError(ErrorKind::Type,
                            fmt::format("keys must be str, int, float, bool or None, not {}", k.type_name()));
    }
  }

  void newline(std::string& out, int level) const {
    if (!o_.indent) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += *o_.indent;
  }

  const JsonOptions& o_;
  std::string item_sep_, key_sep_;
};

}  // namespace

std::string to_json(const Value& v, const JsonOptions& options) {
  std::string out;
  Writer(options).write(out, v, 0);
  return out;
}

}  // namespace qtune::jinja
