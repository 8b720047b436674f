#include "qtune/jinja/error.h"

namespace qtune::jinja {
namespace {

std::string full_message(const std::string& message, const std::string& source, int line, int column) {
  if (source.empty() && line == 0) return message;
  if (line == 0) return fmt::format("{}: {}", source, message);
  return fmt::format("{}:{}:{}: {}", source.empty() ? "<template>" : source, line, column, message);
}

}  // namespace

const char* error_kind_name(ErrorKind k) {
  switch (k) {
    case ErrorKind::Syntax: return "syntax";
    case ErrorKind::Undefined: return "undefined";
    case ErrorKind::Type: return "type";
    case ErrorKind::Raised: return "raised";
    case ErrorKind::Security: return "security";
    case ErrorKind::Limit: return "limit";
    case ErrorKind::Unsupported: return "unsupported";
  }
  return "error";
}

TemplateError::TemplateError(ErrorKind kind, std::string message, std::string source, int line, int column)
    : qtune::Error(full_message(message, source, line, column)),
      kind_(kind),
      message_(std::move(message)),
      line_(line),
      column_(column) {}

}  // namespace qtune::jinja
