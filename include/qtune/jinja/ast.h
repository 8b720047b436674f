#pragma once
// The nodes the parser builds, after jinja2's nodes.py: expressions and statements, each with the offset in the
// normalized source where it starts (errors turn it into a line and column).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qtune/jinja/value.h"

namespace qtune::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,   // value
    Name,      // name
    List,      // items
    Tuple,     // items
    Dict,      // items: key, value, key, value ...
    GetAttr,   // a.name
    GetItem,   // a[b]
    Slice,     // items: start, stop, step (null when absent)
    Call,      // a(items..., kwargs..., *dyn_args, **dyn_kwargs)
    Filter,    // a | name(items..., kwargs...); a is null inside a filter block
    Test,      // a is [not] name(items...)
    Neg, Pos, Not,             // unary: a
    Add, Sub, Mul, Div, FloorDiv, Mod, Pow,  // binary: a, b
    Concat,    // items joined with ~
    Compare,   // a, then ops[i] against items[i] (chained as in Python)
    And, Or,   // a, b
    CondExpr,  // b if a else c (c may be null: undefined)
  };
  Kind kind;
  uint32_t offset = 0;
  Value value;
  std::string name;
  ExprPtr a, b, c;
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr dyn_args, dyn_kwargs;
  std::vector<std::string> ops;  // Compare: "==", "!=", "<", "<=", ">", ">=", "in", "not in"
  bool negated = false;          // Test: `is not`
  bool soft = false;             // Filter/Test: inside an if, where jinja2 reports an unknown name only when run
  // Built from literals only: jinja2's optimizer folds it at compile time, where a failing subscript (even a slice)
  // becomes undefined instead of raising.
  bool constant = false;

  Expr(Kind k, uint32_t off) : kind(k), offset(off) {}
};

// What `set` and `for` assign to: a name, names unpacked from a tuple, or a namespace attribute (`ns.attr`).
struct Target {
  std::vector<std::string> names;
  bool tuple = false;
  std::string attr;  // set ns.attr = ...: names[0] is the namespace
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Stmt {
  enum class Kind {
    Text,        // text
    Output,      // exprs: each printed
    If,          // branches (cond, body); a last branch with a null cond is the else
    For,         // target in expr [if cond] [recursive]: body, else_body
    Set,         // target = expr
    SetBlock,    // target = rendered body [| filter]
    Macro,       // name(params): body
    CallBlock,   // call(params) expr: body is the caller
    FilterBlock, // filter (a Filter chain whose innermost subject is null): body
    With,        // names = exprs: body
    Break,
    Continue,
    Generation,  // {% generation %}: body, marked as the assistant's in the output
  };
  Kind kind;
  uint32_t offset = 0;
  std::string text;
  std::vector<ExprPtr> exprs;
  ExprPtr expr, cond, filter;
  Target target;
  std::vector<Target> targets;  // With
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  bool recursive = false;
  std::string name;
  std::vector<MacroParam> params;
  bool uses_caller = false, uses_varargs = false, uses_kwargs = false;  // Macro: what its body reads

  Stmt(Kind k, uint32_t off) : kind(k), offset(off) {}
};

}  // namespace qtune::jinja
