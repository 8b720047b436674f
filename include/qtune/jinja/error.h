#pragma once
// The one error a template raises, with where it happened and a kind that says which of jinja2's exceptions it
// stands for (the oracle and the fuzz test compare kinds: qtune raises where jinja2 raises).
#include <string>

#include "qtune/util/error.h"

namespace qtune::jinja {

enum class ErrorKind {
  Syntax,       // TemplateSyntaxError / TemplateAssertionError: the template does not parse (unknown filter, tag ...)
  Undefined,    // UndefinedError: an undefined value used beyond printing and testing it
  Type,         // TypeError / ValueError / KeyError / IndexError / ZeroDivisionError / OverflowError of an operation
  Raised,       // raise_exception(message): the template's own error
  Security,     // SecurityError: what the sandbox refuses (list.append, underscore attributes ...)
  Limit,        // qtune's bounds: loop iterations, recursion depth, output size
  Unsupported,  // a construct jinja2 has that qtune does not implement (never rendered wrongly)
};

const char* error_kind_name(ErrorKind k);

// "SOURCE:LINE:COL: message". `message()` is the message alone (raise_exception's text, for instance).
class TemplateError : public qtune::Error {
 public:
  TemplateError(ErrorKind kind, std::string message, std::string source = "", int line = 0, int column = 0);
  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }
  int line() const { return line_; }
  int column() const { return column_; }

 private:
  ErrorKind kind_;
  std::string message_;
  int line_, column_;
};

// Where a token or node starts in the template source (1-based; column counts code points).
struct Pos {
  int line = 0;
  int column = 0;
};

}  // namespace qtune::jinja
