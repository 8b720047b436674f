#pragma once
// Runs a parsed template over its variables, as jinja2 renders it in transformers' ImmutableSandboxedEnvironment:
// Python's semantics for values and operators, jinja2's scoping (a for loop's body and a macro have their own
// scope; `if` does not), jinja2's default Undefined. It has no file, environment or process access (the globals are
// range, dict, namespace, raise_exception and strftime_now), and bounded loop iterations, call depth and output
// size, so a hostile template can neither hang qtune nor exhaust its memory.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qtune/jinja/ast.h"
#include "qtune/jinja/error.h"
#include "qtune/jinja/parser.h"
#include "qtune/jinja/value.h"

namespace qtune::jinja {

struct RenderLimits {
  int64_t max_iterations = 1'000'000;   // for-loop iterations in one render, all loops together
  int max_call_depth = 100;             // nested macro calls (jinja2: Python's recursion limit)
  size_t max_output = 64u << 20;        // bytes of output, and of any one string or list a template builds
};

// The byte range of the output a `{% generation %}` block wrote (transformers' return_assistant_tokens_mask).
struct GenerationSpan {
  size_t begin = 0, end = 0;
};

struct Rendered {
  std::string text;
  std::vector<GenerationSpan> generation;
};

struct Frame;

class Interpreter {
 public:
  Interpreter(const ParsedTemplate& t, const DictObj& variables, const RenderLimits& limits);
  ~Interpreter();
  Rendered render();

  // For builtins (filters, tests, methods, globals) that call back into the template.
  Value call(const Value& f, CallArgs& args);
  Value filter(const std::string& name, const Value& subject, CallArgs& args);
  bool test(const std::string& name, const Value& subject, CallArgs& args);
  Value getattr(const Value& obj, const std::string& name);  // jinja2's environment.getattr
  Value getitem(const Value& obj, const Value& key);         // jinja2's environment.getitem
  void check_size(size_t bytes) const;                       // a built value within max_output
  void count_iterations(int64_t n);                          // loops and builtins that iterate

 private:
  struct Capture;
  enum class Flow { Normal, Break, Continue };

  Flow exec(const Body& body, const std::shared_ptr<Frame>& f);
  Flow exec(const Stmt& s, const std::shared_ptr<Frame>& f);
  Flow exec_for(const Stmt& s, const std::shared_ptr<Frame>& f);
  void exec_set(const Target& t, const Value& v, const std::shared_ptr<Frame>& f, uint32_t offset);
  std::string render_capture(const Body& body, const std::shared_ptr<Frame>& f);
  Value eval(const Expr& e, const std::shared_ptr<Frame>& f);
  Value eval_inner(const Expr& e, const std::shared_ptr<Frame>& f);
  std::optional<Value> fold(const Expr& e, const std::shared_ptr<Frame>& f, bool any_value);
  Value eval_call(const Expr& e, const std::shared_ptr<Frame>& f, const Value* caller = nullptr);
  void eval_args(const Expr& e, const std::shared_ptr<Frame>& f, CallArgs& out);
  Value lookup(const std::string& name, const std::shared_ptr<Frame>& f);
  Value make_macro(const Stmt& s, const std::shared_ptr<Frame>& f, bool is_caller);
  void write(const std::string& s);
  void write(const Value& v);
  [[noreturn]] void fail(ErrorKind kind, const std::string& message, uint32_t offset) const;
  TemplateError located(const TemplateError& e, uint32_t offset) const;

  const ParsedTemplate& t_;
  const DictObj& vars_;
  RenderLimits limits_;
  std::vector<std::string*> out_;  // the output, then each capture (set block, macro body) being rendered
  std::vector<GenerationSpan> generation_;
  int64_t iterations_ = 0;
  int depth_ = 0;
  bool folding_ = false;  // evaluating a printed expression of literals (see exec's Output)
};

}  // namespace qtune::jinja
