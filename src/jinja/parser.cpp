#include "qtune/jinja/parser.h"

#include <initializer_list>

#include "qtune/jinja/filters.h"
#include "qtune/jinja/tests.h"
#include "qtune/jinja/lexer.h"

namespace qtune::jinja {
namespace {

using K = Expr::Kind;
using SK = Stmt::Kind;

// Expressions nested deeper than this are refused (a hostile template cannot exhaust the parser's stack).
constexpr int kMaxNesting = 200;

class Parser {
 public:
  Parser(Lexed lexed, std::string name) : lx_(std::move(lexed)), name_(std::move(name)) {}

  std::shared_ptr<const ParsedTemplate> run() {
    auto t = std::make_shared<ParsedTemplate>();
    t->body = subparse({});
    if (cur().type != Tok::Eof) fail("unexpected tag");
    mark_constants(t->body);
    t->name = name_;
    t->source = std::move(lx_.source);
    t->has_generation = has_generation_;
    return t;
  }

 private:
  // --- token stream ------------------------------------------------------------------------------
  const Token& cur() const { return lx_.tokens[i_]; }
  const Token& look(size_t k = 1) const { return lx_.tokens[std::min(i_ + k, lx_.tokens.size() - 1)]; }
  const Token& next() {
    const Token& t = lx_.tokens[i_];
    if (i_ + 1 < lx_.tokens.size()) ++i_;
    return t;
  }
  bool is_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Tok::Name && cur().text == n; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::Data: return "template data";
      case Tok::VarBegin: return "begin of print statement";
      case Tok::VarEnd: return "end of print statement";
      case Tok::BlockBegin: return "begin of statement block";
      case Tok::BlockEnd: return "end of statement block";
      case Tok::Name: return "'" + t.text + "'";
      case Tok::String: return "string";
      case Tok::Int: return "integer";
      case Tok::Float: return "float";
      case Tok::Op: return "'" + t.text + "'";
      case Tok::Eof: return "end of template";
    }
    return "token";
  }

  [[noreturn]] void fail(const std::string& message, uint32_t offset, ErrorKind kind = ErrorKind::Syntax) const {
    const Pos p = position_of(lx_.source, offset);
    throw TemplateError(kind, message, name_, p.line, p.column);
  }
  [[noreturn]] void fail(const std::string& message) const { fail(message, cur().offset); }
  [[noreturn]] void unsupported(const std::string& what, uint32_t offset) const {
    fail(what + " is not supported by qtune's Jinja interpreter", offset, ErrorKind::Unsupported);
  }

  void expect_op(const char* op) {
    if (!skip_op(op)) fail(fmt::format("expected token '{}', got {}", op, describe(cur())));
  }
  void expect(Tok t, const char* what) {
    if (cur().type != t) fail(fmt::format("expected {}, got {}", what, describe(cur())));
    next();
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail(fmt::format("expected token 'name', got {}", describe(cur())));
    return next().text;
  }

  ExprPtr make(K k, uint32_t off) { return std::make_unique<Expr>(k, off); }

  struct Depth {
    explicit Depth(Parser& p) : p_(p) {
      if (++p_.depth_ > kMaxNesting) p_.fail(fmt::format("nested deeper than {} levels", kMaxNesting), p_.cur().offset,
                                             ErrorKind::Limit);
    }
    ~Depth() { --p_.depth_; }
    Parser& p_;
  };

  // --- statements ----------------------------------------------------------------------------------
  // Statements up to a `{% name %}` tag in `end` (left at that name) or the end of the template.
  Body subparse(std::initializer_list<const char*> end) {
    Body body;
    Depth depth(*this);
    while (cur().type != Tok::Eof) {
      const Token& t = cur();
      if (t.type == Tok::Data) {
        auto s = std::make_unique<Stmt>(SK::Text, t.offset);
        s->text = t.text;
        body.push_back(std::move(s));
        next();
      } else if (t.type == Tok::VarBegin) {
        next();
        auto s = std::make_unique<Stmt>(SK::Output, t.offset);
        s->exprs.push_back(parse_tuple(true, {}, false));
        expect(Tok::VarEnd, "end of print statement");
        body.push_back(std::move(s));
      } else if (t.type == Tok::BlockBegin) {
        next();
        for (const char* e : end)
          if (is_name(e)) return body;
        body.push_back(parse_statement());
        expect(Tok::BlockEnd, "end of statement block");
      } else {
        fail("internal: unexpected token");
      }
    }
    if (end.size()) {
      std::string names;
      for (const char* e : end) names += (names.empty() ? "'" : " or '") + std::string(e) + "'";
      fail(fmt::format("Unexpected end of template. Jinja was looking for the following tags: {}.", names));
    }
    return body;
  }

  // After a tag's header: `%}`, then statements up to one of `end`; drop_needle consumes the end tag's name.
  Body parse_statements(std::initializer_list<const char*> end, bool drop_needle) {
    skip_op(":");
    expect(Tok::BlockEnd, "end of statement block");
    Body b = subparse(end);
    if (drop_needle) next();
    return b;
  }

  StmtPtr parse_statement() {
    const Token& t = cur();
    if (t.type != Tok::Name) fail("tag name expected");
    const std::string tag = t.text;
    const uint32_t off = t.offset;
    if (tag == "for") return parse_for();
    if (tag == "if") return parse_if();
    if (tag == "set") return parse_set();
    if (tag == "macro") return parse_macro();
    if (tag == "call") return parse_call_block();
    if (tag == "filter") return parse_filter_block();
    if (tag == "with") return parse_with();
    if (tag == "print") {
      next();
      auto s = std::make_unique<Stmt>(SK::Output, off);
      while (cur().type != Tok::BlockEnd) {
        if (!s->exprs.empty()) expect_op(",");
        s->exprs.push_back(parse_expression());
      }
      return s;
    }
    if (tag == "break" || tag == "continue") {
      next();
      if (loop_depth_ == 0) fail(fmt::format("'{}' outside of a loop", tag), off);
      return std::make_unique<Stmt>(tag == "break" ? SK::Break : SK::Continue, off);
    }
    if (tag == "generation") {
      next();
      has_generation_ = true;
      auto s = std::make_unique<Stmt>(SK::Generation, off);
      s->body = parse_statements({"endgeneration"}, true);
      return s;
    }
    for (const char* u : {"block", "extends", "include", "import", "from", "autoescape"})
      if (tag == u) unsupported("the '" + tag + "' tag", off);
    if (tag.rfind("end", 0) == 0 || tag == "elif" || tag == "else")
      fail(fmt::format("Encountered unknown tag '{}'.", tag), off);
    fail(fmt::format("Encountered unknown tag '{}'.", tag), off);
  }

  StmtPtr parse_for() {
    const uint32_t off = next().offset;
    auto s = std::make_unique<Stmt>(SK::For, off);
    s->target = parse_assign_target(false, true);
    if (!skip_name("in")) fail(fmt::format("expected token 'in', got {}", describe(cur())));
    s->expr = parse_tuple(false, {"recursive"}, false);
    if (skip_name("if")) s->cond = parse_expression();
    if (is_name("recursive")) unsupported("a recursive for loop", cur().offset);
    ++loop_depth_;
    s->body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    if (next().text == "else") s->else_body = parse_statements({"endfor"}, true);
    return s;
  }

  StmtPtr parse_if() {
    const uint32_t off = next().offset;
    auto s = std::make_unique<Stmt>(SK::If, off);
    ++soft_;
    while (true) {
      ExprPtr cond = parse_tuple(false, {}, false);
      Body body = parse_statements({"elif", "else", "endif"}, false);
      s->branches.emplace_back(std::move(cond), std::move(body));
      const std::string t = next().text;
      if (t == "elif") continue;
      if (t == "else") s->branches.emplace_back(nullptr, parse_statements({"endif"}, true));
      break;
    }
    --soft_;
    return s;
  }

  StmtPtr parse_set() {
    const uint32_t off = next().offset;
    Target target = parse_assign_target(true, true);
    if (skip_op("=")) {
      auto s = std::make_unique<Stmt>(SK::Set, off);
      s->target = std::move(target);
      s->expr = parse_tuple(true, {}, false);
      return s;
    }
    auto s = std::make_unique<Stmt>(SK::SetBlock, off);
    s->target = std::move(target);
    if (is_op("|")) s->filter = parse_filter(nullptr, false);
    s->body = parse_statements({"endset"}, true);
    return s;
  }

  void parse_signature(Stmt& s) {
    expect_op("(");
    bool defaults = false;
    while (!is_op(")")) {
      if (!s.params.empty()) expect_op(",");
      MacroParam p;
      p.name = expect_name();
      if (skip_op("=")) {
        p.default_value = parse_expression();
        defaults = true;
      } else if (defaults) {
        fail("non-default argument follows default argument");
      }
      s.params.push_back(std::move(p));
    }
    expect_op(")");
  }

  StmtPtr parse_macro() {
    const uint32_t off = next().offset;
    auto s = std::make_unique<Stmt>(SK::Macro, off);
    s->name = expect_name();
    parse_signature(*s);
    macros_.push_back(s.get());
    const int loops = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_statements({"endmacro"}, true);
    loop_depth_ = loops;
    macros_.pop_back();
    return s;
  }

  StmtPtr parse_call_block() {
    const uint32_t off = next().offset;
    auto s = std::make_unique<Stmt>(SK::CallBlock, off);
    if (is_op("(")) parse_signature(*s);
    s->expr = parse_expression();
    if (s->expr->kind != K::Call) fail("expected call", s->expr->offset);
    macros_.push_back(s.get());
    s->body = parse_statements({"endcall"}, true);
    macros_.pop_back();
    return s;
  }

  StmtPtr parse_filter_block() {
    const uint32_t off = next().offset;
    auto s = std::make_unique<Stmt>(SK::FilterBlock, off);
    s->filter = parse_filter(nullptr, true);
    s->body = parse_statements({"endfilter"}, true);
    return s;
  }

  StmtPtr parse_with() {
    const uint32_t off = next().offset;
    auto s = std::make_unique<Stmt>(SK::With, off);
    while (cur().type != Tok::BlockEnd) {
      if (!s->targets.empty()) expect_op(",");
      s->targets.push_back(parse_assign_target(false, false));
      expect_op("=");
      s->exprs.push_back(parse_expression());
    }
    s->body = parse_statements({"endwith"}, true);
    return s;
  }

  // A name, `ns.attr` (set only), or names separated by commas (optionally in parentheses).
  Target parse_assign_target(bool with_namespace, bool allow_tuple) {
    Target t;
    if (with_namespace && cur().type == Tok::Name && look().type == Tok::Op && look().text == ".") {
      t.names.push_back(next().text);
      next();
      t.attr = expect_name();
      return t;
    }
    const bool paren = allow_tuple && skip_op("(");
    while (true) {
      const uint32_t off = cur().offset;
      const std::string n = expect_name();
      if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" || n == "None")
        fail(fmt::format("can't assign to '{}'", n), off);
      t.names.push_back(n);
      if (!allow_tuple || !is_op(",")) break;
      next();
      t.tuple = true;
      if (cur().type != Tok::Name) break;
    }
    if (paren) {
      expect_op(")");
      t.tuple = true;
    }
    return t;
  }

  // --- expressions ---------------------------------------------------------------------------------
  ExprPtr parse_expression(bool with_condexpr = true) { return with_condexpr ? parse_condexpr() : parse_or(); }

  static void mark_constants(Body& body) {
    for (auto& st : body) {
      for (auto& e : st->exprs) mark_constant(*e);
      for (Expr* e : {st->expr.get(), st->cond.get(), st->filter.get()})
        if (e) mark_constant(*e);
      for (auto& [cond, b] : st->branches) {
        if (cond) mark_constant(*cond);
        mark_constants(b);
      }
      for (auto& p : st->params)
        if (p.default_value) mark_constant(*p.default_value);
      mark_constants(st->body);
      mark_constants(st->else_body);
    }
  }

  // jinja2's as_const: literals, and containers, operators, conditionals and subscripts of them.
  static bool mark_constant(Expr& e) {
    bool c = true;
    for (auto& x : e.items)
      if (x && !mark_constant(*x)) c = false;
    for (Expr* x : {e.a.get(), e.b.get(), e.c.get(), e.dyn_args.get(), e.dyn_kwargs.get()})
      if (x && !mark_constant(*x)) c = false;
    for (auto& kv : e.kwargs)
      if (!mark_constant(*kv.second)) c = false;
    switch (e.kind) {
      case K::Literal: e.constant = true; break;
      case K::Name: case K::Call: e.constant = false; break;
      case K::Filter:  // jinja2 folds a filter unless it takes the context (map and the select family)
        e.constant = c && e.a && !e.dyn_args && !e.dyn_kwargs && e.name != "map" && e.name != "select" &&
                     e.name != "reject" && e.name != "selectattr" && e.name != "rejectattr";
        break;
      default: e.constant = c && e.kwargs.empty() && !e.dyn_args && !e.dyn_kwargs;
    }
    return e.constant;
  }

  ExprPtr parse_condexpr() {
    Depth depth(*this);
    const uint32_t off = cur().offset;
    ExprPtr e = parse_or();
    while (skip_name("if")) {
      auto n = make(K::CondExpr, off);
      ++soft_;
      n->a = parse_or();
      n->b = std::move(e);
      if (skip_name("else")) n->c = parse_condexpr();
      --soft_;
      e = std::move(n);
    }
    return e;
  }

  ExprPtr binary(K k, ExprPtr l, ExprPtr r) {
    auto n = make(k, l->offset);
    n->a = std::move(l);
    n->b = std::move(r);
    return n;
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (skip_name("or")) l = binary(K::Or, std::move(l), parse_and());
    return l;
  }
  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (skip_name("and")) l = binary(K::And, std::move(l), parse_not());
    return l;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      Depth depth(*this);
      auto n = make(K::Not, next().offset);
      n->a = parse_not();
      return n;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const uint32_t off = cur().offset;
    ExprPtr e = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::Op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" || cur().text == ">" ||
           cur().text == ">=")) {
        op = next().text;
      } else if (skip_name("in")) {
        op = "in";
      } else if (is_name("not") && look().type == Tok::Name && look().text == "in") {
        next();
        next();
        op = "not in";
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(K::Compare, off);
        cmp->a = std::move(e);
      }
      cmp->ops.push_back(op);
      cmp->items.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(e);
  }

  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      const K k = next().text == "+" ? K::Add : K::Sub;
      l = binary(k, std::move(l), parse_concat());
    }
    return l;
  }
  ExprPtr parse_concat() {
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    auto n = make(K::Concat, first->offset);
    n->items.push_back(std::move(first));
    while (skip_op("~")) n->items.push_back(parse_math2());
    return n;
  }
  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string o = next().text;
      const K k = o == "*" ? K::Mul : o == "/" ? K::Div : o == "//" ? K::FloorDiv : K::Mod;
      l = binary(k, std::move(l), parse_pow());
    }
    return l;
  }
  ExprPtr parse_pow() {
    ExprPtr l = parse_unary(true);
    while (skip_op("**")) l = binary(K::Pow, std::move(l), parse_unary(true));
    return l;
  }
  ExprPtr parse_unary(bool with_filter) {
    Depth depth(*this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const Token& t = next();
      node = make(t.text == "-" ? K::Neg : K::Pos, t.offset);
      node->a = parse_unary(false);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    switch (t.type) {
      case Tok::Name: {
        next();
        auto n = make(K::Literal, t.offset);
        if (t.text == "true" || t.text == "True") n->value = Value(true);
        else if (t.text == "false" || t.text == "False") n->value = Value(false);
        else if (t.text == "none" || t.text == "None") n->value = Value::none();
        else {
          n->kind = K::Name;
          n->name = t.text;
          if (!macros_.empty() && (t.text == "caller" || t.text == "varargs" || t.text == "kwargs")) {
            Stmt* m = macros_.back();
            if (t.text == "caller") m->uses_caller = true;
            if (t.text == "varargs") m->uses_varargs = true;
            if (t.text == "kwargs") m->uses_kwargs = true;
          }
        }
        return n;
      }
      case Tok::String: {
        auto n = make(K::Literal, t.offset);
        std::string s;
        while (cur().type == Tok::String) s += next().text;  // adjacent literals join, as in Python
        n->value = Value(std::move(s));
        return n;
      }
      case Tok::Int: {
        next();
        auto n = make(K::Literal, t.offset);
        n->value = Value(t.int_value);
        return n;
      }
      case Tok::Float: {
        next();
        auto n = make(K::Literal, t.offset);
        n->value = Value(t.float_value);
        return n;
      }
      case Tok::Op:
        if (t.text == "(") {
          next();
          ExprPtr e = parse_tuple(true, {}, true);
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          next();
          auto n = make(K::List, t.offset);
          while (!is_op("]")) {
            if (!n->items.empty()) expect_op(",");
            if (is_op("]")) break;
            n->items.push_back(parse_expression());
          }
          expect_op("]");
          return n;
        }
        if (t.text == "{") {
          next();
          auto n = make(K::Dict, t.offset);
          while (!is_op("}")) {
            if (!n->items.empty()) expect_op(",");
            if (is_op("}")) break;
            n->items.push_back(parse_expression());
            expect_op(":");
            n->items.push_back(parse_expression());
          }
          expect_op("}");
          return n;
        }
        break;
      default: break;
    }
    fail(fmt::format("unexpected {}", describe(t)));
  }

  bool is_tuple_end(std::initializer_list<const char*> extra_end) const {
    if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || is_op(")")) return true;
    for (const char* e : extra_end)
      if (is_name(e)) return true;
    return false;
  }

  ExprPtr parse_tuple(bool with_condexpr, std::initializer_list<const char*> extra_end, bool explicit_parens) {
    const uint32_t off = cur().offset;
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      args.push_back(parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parens) fail(fmt::format("Expected an expression, got {}", describe(cur())));
    }
    auto n = make(K::Tuple, off);
    n->items = std::move(args);
    return n;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("[")) node = parse_subscript(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else return node;
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) node = parse_filter(std::move(node), false);
      else if (is_name("is")) node = parse_test(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else return node;
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token& t = next();
    if (t.text == ".") {
      const Token& a = next();
      if (a.type == Tok::Name) {
        auto n = make(K::GetAttr, node->offset);
        n->a = std::move(node);
        n->name = a.text;
        return n;
      }
      if (a.type != Tok::Int) fail("expected name or number", a.offset);
      auto n = make(K::GetItem, node->offset);
      n->a = std::move(node);
      n->b = make(K::Literal, a.offset);
      n->b->value = Value(a.int_value);
      return n;
    }
    std::vector<ExprPtr> args;
    const uint32_t off = cur().offset;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    auto n = make(K::GetItem, node->offset);
    n->a = std::move(node);
    if (args.size() == 1) {
      n->b = std::move(args[0]);
    } else {
      n->b = make(K::Tuple, off);
      n->b->items = std::move(args);
    }
    return n;
  }

  ExprPtr parse_subscribed() {
    const uint32_t off = cur().offset;
    std::vector<ExprPtr> args;
    if (is_op(":")) {
      next();
      args.push_back(nullptr);
    } else {
      ExprPtr e = parse_expression();
      if (!is_op(":")) return e;
      next();
      args.push_back(std::move(e));
    }
    if (is_op(":")) args.push_back(nullptr);
    else if (!is_op("]") && !is_op(",")) args.push_back(parse_expression());
    else args.push_back(nullptr);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) args.push_back(parse_expression());
      else args.push_back(nullptr);
    } else {
      args.push_back(nullptr);
    }
    auto n = make(K::Slice, off);
    n->items = std::move(args);
    return n;
  }

  void parse_call_args(Expr& n) {
    expect_op("(");
    bool require_comma = false;
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (skip_op("*")) {
        if (n.dyn_args || n.dyn_kwargs) fail("invalid syntax for function call expression");
        n.dyn_args = parse_expression();
      } else if (skip_op("**")) {
        if (n.dyn_kwargs) fail("invalid syntax for function call expression");
        n.dyn_kwargs = parse_expression();
      } else if (cur().type == Tok::Name && look().type == Tok::Op && look().text == "=") {
        if (n.dyn_kwargs) fail("invalid syntax for function call expression");
        std::string key = next().text;
        next();
        n.kwargs.emplace_back(std::move(key), parse_expression());
      } else {
        if (n.dyn_args || n.dyn_kwargs || !n.kwargs.empty()) fail("invalid syntax for function call expression");
        n.items.push_back(parse_expression());
      }
      require_comma = true;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr node) {
    auto n = make(K::Call, node->offset);
    n->a = std::move(node);
    parse_call_args(*n);
    return n;
  }

  std::string dotted_name() {
    std::string name = expect_name();
    while (is_op(".")) {
      next();
      name += "." + expect_name();
    }
    return name;
  }

  ExprPtr parse_filter(ExprPtr node, bool start_inline) {
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      start_inline = false;
      const uint32_t off = cur().offset;
      auto n = make(K::Filter, node ? node->offset : off);
      n->name = dotted_name();
      check_known(n->name, off, true);
      n->soft = soft_ > 0;
      n->a = std::move(node);
      if (is_op("(")) parse_call_args(*n);
      node = std::move(n);
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr node) {
    next();  // is
    const bool negated = skip_name("not");
    const uint32_t off = cur().offset;
    auto n = make(K::Test, node->offset);
    n->name = dotted_name();
    check_known(n->name, off, false);
    n->soft = soft_ > 0;
    n->a = std::move(node);
    if (is_op("(")) {
      parse_call_args(*n);
    } else if ((cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Int ||
                cur().type == Tok::Float || is_op("(") || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      n->items.push_back(parse_postfix(parse_primary()));
    }
    if (!negated) return n;
    auto neg = make(K::Not, n->offset);
    neg->a = std::move(n);
    return neg;
  }

  // jinja2 reports an unknown filter or test when it compiles the template, unless it sits inside an `if`, where
  // only running it fails; one jinja2 has and qtune lacks is refused where it would run.
  void check_known(const std::string& name, uint32_t off, bool filter) {
    const Support s = filter ? filter_support(name) : test_support(name);
    if (s == Support::Unknown && soft_ == 0)
      fail(fmt::format("No {} named '{}'.", filter ? "filter" : "test", name), off);
  }

  Lexed lx_;
  std::string name_;
  size_t i_ = 0;
  int depth_ = 0;
  int soft_ = 0;        // inside an if's test or branches, or a conditional expression
  int loop_depth_ = 0;  // for break/continue
  bool has_generation_ = false;
  std::vector<Stmt*> macros_;
};

}  // namespace

std::shared_ptr<const ParsedTemplate> parse_template(const std::string& text, const std::string& name) {
  return Parser(lex(text, name), name).run();
}

}  // namespace qtune::jinja
