#include "qtune/jinja/evaluator.h"

#include "qtune/jinja/filters.h"
#include "qtune/jinja/globals.h"
#include "qtune/jinja/lexer.h"
#include "qtune/jinja/methods.h"
#include "qtune/jinja/operators.h"
#include "qtune/jinja/tests.h"

namespace qtune::jinja {

// One scope: a for loop's iteration, a macro call, a with block, or the template's top level.
struct Frame {
  std::vector<std::pair<std::string, Value>> vars;
  std::shared_ptr<Frame> parent;

  explicit Frame(std::shared_ptr<Frame> p = nullptr) : parent(std::move(p)) {}
  const Value* find(const std::string& name) const {
    for (const Frame* f = this; f; f = f->parent.get())
      for (auto it = f->vars.rbegin(); it != f->vars.rend(); ++it)
        if (it->first == name) return &it->second;
    return nullptr;
  }
  void set(const std::string& name, Value v) {
    for (auto& [k, x] : vars)
      if (k == name) {
        x = std::move(v);
        return;
      }
    vars.emplace_back(name, std::move(v));
  }
};

namespace {

using K = Expr::Kind;
using SK = Stmt::Kind;

std::optional<int64_t> slice_index(const Value& v) {
  if (v.is_none() || v.is_undefined()) return std::nullopt;
  if (v.is_int() || v.is_bool()) return v.as_int();
  throw TemplateError(ErrorKind::Type, "slice indices must be integers or None or have an __index__ method");
}

}  // namespace

Interpreter::Interpreter(const ParsedTemplate& t, const DictObj& variables, const RenderLimits& limits)
    : t_(t), vars_(variables), limits_(limits) {}

Interpreter::~Interpreter() = default;

Rendered Interpreter::render() {
  Rendered r;
  out_ = {&r.text};
  auto root = std::make_shared<Frame>();
  exec(t_.body, root);
  r.generation = std::move(generation_);
  return r;
}

TemplateError Interpreter::located(const TemplateError& e, uint32_t offset) const {
  const Pos p = position_of(t_.source, offset);
  return TemplateError(e.kind(), e.message(), t_.name, p.line, p.column);
}

void Interpreter::fail(ErrorKind kind, const std::string& message, uint32_t offset) const {
  throw located(TemplateError(kind, message), offset);
}

void Interpreter::check_size(size_t bytes) const {
  if (bytes > limits_.max_output)
    throw TemplateError(ErrorKind::Limit, fmt::format("the template's output or a value it builds passed {} bytes "
                                                      "(qtune's bound on a render)", limits_.max_output));
}

void Interpreter::count_iterations(int64_t n) {
  iterations_ += n;
  if (iterations_ > limits_.max_iterations)
    throw TemplateError(ErrorKind::Limit, fmt::format("the template ran more than {} loop iterations "
                                                      "(qtune's bound on a render)", limits_.max_iterations));
}

void Interpreter::write(const std::string& s) {
  std::string& o = *out_.back();
  check_size(o.size() + s.size());
  o += s;
}

void Interpreter::write(const Value& v) {
  std::string& o = *out_.back();
  v.append_str(o);
  check_size(o.size());
}

std::string Interpreter::render_capture(const Body& body, const std::shared_ptr<Frame>& f) {
  std::string buf;
  out_.push_back(&buf);
  try {
    exec(body, f);
  } catch (...) {
    out_.pop_back();
    throw;
  }
  out_.pop_back();
  return buf;
}

// --- statements ----------------------------------------------------------------------------------

Interpreter::Flow Interpreter::exec(const Body& body, const std::shared_ptr<Frame>& f) {
  for (const auto& s : body) {
    const Flow flow = exec(*s, f);
    if (flow != Flow::Normal) return flow;
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec(const Stmt& s, const std::shared_ptr<Frame>& f) {
  try {
    switch (s.kind) {
      case SK::Text: write(s.text); break;
      case SK::Output:
        for (const auto& e : s.exprs) {
          // A printed expression of literals is folded whatever its value (jinja2's Output), undefined included.
          if (e->constant) {
            if (auto v = fold(*e, f, /*any_value=*/true)) {
              write(*v);
              continue;
            }
          }
          write(eval(*e, f));
        }
        break;
      case SK::If:
        for (const auto& [cond, body] : s.branches)
          if (!cond || eval(*cond, f).truthy()) return exec(body, f);
        break;
      case SK::For: return exec_for(s, f);
      case SK::Set: exec_set(s.target, eval(*s.expr, f), f, s.offset); break;
      case SK::SetBlock: {
        Value v(render_capture(s.body, f));
        if (s.filter) {
          // The filter chain's innermost subject is the rendered block.
          std::vector<const Expr*> chain;
          for (const Expr* e = s.filter.get(); e; e = e->a.get()) chain.push_back(e);
          for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
            CallArgs args;
            eval_args(**it, f, args);
            v = filter((*it)->name, v, args);
          }
        }
        exec_set(s.target, v, f, s.offset);
        break;
      }
      case SK::Macro: f->set(s.name, make_macro(s, f, false)); break;
      case SK::CallBlock: {
        const Value caller = make_macro(s, f, true);
        write(eval_call(*s.expr, f, &caller));
        break;
      }
      case SK::FilterBlock: {
        Value v(render_capture(s.body, f));
        std::vector<const Expr*> chain;
        for (const Expr* e = s.filter.get(); e; e = e->a.get()) chain.push_back(e);
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
          CallArgs args;
          eval_args(**it, f, args);
          v = filter((*it)->name, v, args);
        }
        write(v);
        break;
      }
      case SK::With: {
        auto inner = std::make_shared<Frame>(f);
        std::vector<Value> values;
        for (const auto& e : s.exprs) values.push_back(eval(*e, f));
        for (size_t i = 0; i < values.size(); ++i) exec_set(s.targets[i], values[i], inner, s.offset);
        return exec(s.body, inner);
      }
      case SK::Break: return Flow::Break;
      case SK::Continue: return Flow::Continue;
      case SK::Generation: {
        const std::string text = render_capture(s.body, f);
        // transformers' AssistantTracker: the block's start is what the top-level output holds so far.
        const size_t begin = out_.front()->size();
        generation_.push_back({begin, begin + text.size()});
        write(text);
        break;
      }
    }
  } catch (const TemplateError& e) {
    if (e.line() == 0) throw located(e, s.offset);
    throw;
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec_for(const Stmt& s, const std::shared_ptr<Frame>& f) {
  const Value seq = eval(*s.expr, f);
  std::vector<Value> items = iterate(seq);
  if (s.cond) {
    std::vector<Value> kept;
    for (auto& item : items) {
      count_iterations(1);
      auto probe = std::make_shared<Frame>(f);
      exec_set(s.target, item, probe, s.offset);
      if (eval(*s.cond, probe).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    if (!s.else_body.empty()) return exec(s.else_body, std::make_shared<Frame>(f));
    return Flow::Normal;
  }
  const auto n = static_cast<int64_t>(items.size());
  auto last_changed = std::make_shared<std::optional<Value>>();
  for (int64_t i = 0; i < n; ++i) {
    count_iterations(1);
    auto frame = std::make_shared<Frame>(f);
    exec_set(s.target, items[i], frame, s.offset);
    auto loop = std::make_shared<DictObj>();
    loop->items.reserve(13);
    loop->items.emplace_back(Value("index"), Value(i + 1));
    loop->items.emplace_back(Value("index0"), Value(i));
    loop->items.emplace_back(Value("revindex"), Value(n - i));
    loop->items.emplace_back(Value("revindex0"), Value(n - i - 1));
    loop->items.emplace_back(Value("first"), Value(i == 0));
    loop->items.emplace_back(Value("last"), Value(i == n - 1));
    loop->items.emplace_back(Value("length"), Value(n));
    loop->items.emplace_back(Value("depth"), Value(1));
    loop->items.emplace_back(Value("depth0"), Value(0));
    loop->items.emplace_back(Value("previtem"),
                             i > 0 ? items[i - 1] : Value::undefined("there is no previous item"));
    loop->items.emplace_back(Value("nextitem"), i + 1 < n ? items[i + 1] : Value::undefined("there is no next item"));
    auto cycle = std::make_shared<CallableObj>();
    cycle->name = "loop.cycle";
    cycle->fn = [i](Interpreter&, CallArgs& a) -> Value {
      if (a.args.empty()) throw TemplateError(ErrorKind::Type, "no items for cycling given");
      return a.args[static_cast<size_t>(i) % a.args.size()];
    };
    loop->items.emplace_back(Value("cycle"), Value(cycle));
    auto changed = std::make_shared<CallableObj>();
    changed->name = "loop.changed";
    changed->fn = [last_changed](Interpreter&, CallArgs& a) -> Value {
      Value now = Value::list(a.args);
      if (*last_changed && equals(**last_changed, now)) return Value(false);
      *last_changed = now;
      return Value(true);
    };
    loop->items.emplace_back(Value("changed"), Value(changed));
    frame->set("loop", Value(std::shared_ptr<const DictObj>(std::move(loop))));
    const Flow flow = exec(s.body, frame);
    if (flow == Flow::Break) break;
  }
  return Flow::Normal;
}

void Interpreter::exec_set(const Target& t, const Value& v, const std::shared_ptr<Frame>& f, uint32_t offset) {
  if (!t.attr.empty()) {
    const Value ns = lookup(t.names[0], f);
    if (!ns.is_namespace()) fail(ErrorKind::Type, "cannot assign attribute on non-namespace object", offset);
    if (!t.attr.empty() && t.attr[0] == '_')
      fail(ErrorKind::Security, fmt::format("Chat templates cannot store underscore-prefixed attributes on a "
                                            "namespace, but got '{}'.", t.attr), offset);
    ns.ns().attrs.set(Value(t.attr), v);
    return;
  }
  if (!t.tuple) {
    f->set(t.names[0], v);
    return;
  }
  const std::vector<Value> items = iterate(v);
  if (items.size() > t.names.size())
    fail(ErrorKind::Type, fmt::format("too many values to unpack (expected {})", t.names.size()), offset);
  if (items.size() < t.names.size())
    fail(ErrorKind::Type, fmt::format("not enough values to unpack (expected {}, got {})", t.names.size(),
                                      items.size()), offset);
  for (size_t i = 0; i < items.size(); ++i) f->set(t.names[i], items[i]);
}

Value Interpreter::make_macro(const Stmt& s, const std::shared_ptr<Frame>& closure, bool is_caller) {
  auto m = std::make_shared<CallableObj>();
  m->name = is_caller ? "caller" : s.name;
  m->is_macro = true;
  const Stmt* def = &s;
  // The closure keeps its frame alive; a macro stored in that same frame makes a cycle, which the render's end
  // breaks (frames are dropped with the interpreter's locals), so nothing outlives the render.
  std::weak_ptr<Frame> weak = closure;
  m->fn = [def, weak, is_caller](Interpreter& in, CallArgs& a) -> Value {
    auto parent = weak.lock();
    auto frame = std::make_shared<Frame>(parent);
    const std::string name = is_caller ? "caller" : def->name;
    const auto& params = def->params;
    std::vector<bool> bound(params.size(), false);
    std::vector<Value> varargs;
    for (size_t i = 0; i < a.args.size(); ++i) {
      if (i < params.size()) {
        frame->set(params[i].name, a.args[i]);
        bound[i] = true;
      } else if (def->uses_varargs) {
        varargs.push_back(a.args[i]);
      } else {
        throw TemplateError(ErrorKind::Type, fmt::format("macro '{}' takes not more than {} argument(s)", name,
                                                         params.size()));
      }
    }
    std::vector<std::pair<Value, Value>> extra;
    Value caller;
    for (auto& [k, v] : a.kwargs) {
      size_t j = 0;
      while (j < params.size() && params[j].name != k) ++j;
      if (j < params.size()) {
        if (bound[j])
          throw TemplateError(ErrorKind::Type, fmt::format("macro '{}' got multiple values for argument '{}'", name, k));
        frame->set(k, v);
        bound[j] = true;
      } else if (k == "caller" && def->uses_caller) {
        caller = v;
      } else if (def->uses_kwargs) {
        extra.emplace_back(Value(k), v);
      } else {
        throw TemplateError(ErrorKind::Type, fmt::format("macro '{}' takes no keyword argument '{}'", name, k));
      }
    }
    for (size_t i = 0; i < params.size(); ++i) {
      if (bound[i]) continue;
      if (params[i].default_value) frame->set(params[i].name, in.eval(*params[i].default_value, frame));
      else frame->set(params[i].name, Value::undefined(fmt::format("parameter '{}' was not provided", params[i].name)));
    }
    if (def->uses_varargs) frame->set("varargs", Value::list(std::move(varargs), true));
    if (def->uses_kwargs) frame->set("kwargs", Value::dict(std::move(extra)));
    if (def->uses_caller && !is_caller) {
      frame->set("caller", caller.is_undefined() ? Value::undefined("No caller defined") : caller);
    }
    if (++in.depth_ > in.limits_.max_call_depth) {
      --in.depth_;
      throw TemplateError(ErrorKind::Limit, fmt::format("macro calls nested deeper than {} (qtune's bound on a "
                                                        "render)", in.limits_.max_call_depth));
    }
    std::string text;
    try {
      text = in.render_capture(def->body, frame);
    } catch (...) {
      --in.depth_;
      throw;
    }
    --in.depth_;
    return Value(std::move(text));
  };
  return Value(m);
}

// --- expressions ---------------------------------------------------------------------------------

Value Interpreter::lookup(const std::string& name, const std::shared_ptr<Frame>& f) {
  if (const Value* v = f->find(name)) return *v;
  if (const Value* v = vars_.find(name)) return *v;
  if (auto g = global_function(name)) return *g;
  return Value::undefined(fmt::format("'{}' is undefined", name));
}

namespace {

// jinja2's has_safe_repr: what its optimizer may write into compiled code as a constant.
bool safe_repr(const Value& v) {
  switch (v.type()) {
    case Value::Type::None:
    case Value::Type::Bool:
    case Value::Type::Int:
    case Value::Type::Float:
    case Value::Type::String: return true;
    case Value::Type::List:
      if (v.is_generator()) return false;
      for (const auto& x : v.items())
        if (!safe_repr(x)) return false;
      return true;
    case Value::Type::Dict:
      for (const auto& [k, x] : v.dict().items)
        if (!safe_repr(k) || !safe_repr(x)) return false;
      return true;
    default: return false;
  }
}

}  // namespace

// jinja2 evaluates an expression of literals when it compiles the template (as_const), where a subscript is
// environment.getitem's even for a slice (a non-sequence gives undefined, not a TypeError); the result is kept when
// it can be written as a constant, otherwise (or when folding fails) the expression runs as any other.
std::optional<Value> Interpreter::fold(const Expr& e, const std::shared_ptr<Frame>& f, bool any_value) {
  const bool outer = folding_;
  folding_ = true;
  std::optional<Value> v;
  try {
    v = eval_inner(e, f);
  } catch (const TemplateError&) {
    v.reset();
  }
  folding_ = outer;
  if (v && !any_value && !safe_repr(*v)) v.reset();
  return v;
}

Value Interpreter::eval(const Expr& e, const std::shared_ptr<Frame>& f) {
  if (e.constant && !folding_ && e.kind != Expr::Kind::Literal) {
    if (auto v = fold(e, f, false)) return *v;
  }
  try {
    return eval_inner(e, f);
  } catch (const TemplateError& err) {
    if (err.line() == 0) throw located(err, e.offset);
    throw;
  }
}

void Interpreter::eval_args(const Expr& e, const std::shared_ptr<Frame>& f, CallArgs& out) {
  for (const auto& a : e.items) out.args.push_back(eval(*a, f));
  for (const auto& [k, v] : e.kwargs) out.kwargs.emplace_back(k, eval(*v, f));
  if (e.dyn_args) {
    for (auto& v : iterate(eval(*e.dyn_args, f))) out.args.push_back(std::move(v));
  }
  if (e.dyn_kwargs) {
    const Value d = eval(*e.dyn_kwargs, f);
    if (!d.is_dict()) throw TemplateError(ErrorKind::Type, "argument after ** must be a mapping");
    for (const auto& [k, v] : d.dict().items) {
      if (!k.is_string()) throw TemplateError(ErrorKind::Type, "keywords must be strings");
      out.kwargs.emplace_back(k.str(), v);
    }
  }
}

Value Interpreter::call(const Value& fn, CallArgs& args) {
  if (fn.is_undefined()) undefined_error(fn);
  if (!fn.is_callable()) throw TemplateError(ErrorKind::Type, fmt::format("'{}' object is not callable", fn.type_name()));
  return fn.callable().fn(*this, args);
}

Value Interpreter::eval_call(const Expr& e, const std::shared_ptr<Frame>& f, const Value* caller) {
  const Value fn = eval(*e.a, f);
  CallArgs args;
  eval_args(e, f, args);
  if (caller) args.kwargs.emplace_back("caller", *caller);
  return call(fn, args);
}

Value Interpreter::filter(const std::string& name, const Value& subject, CallArgs& args) {
  return apply_filter(*this, name, subject, args);
}

bool Interpreter::test(const std::string& name, const Value& subject, CallArgs& args) {
  return apply_test(*this, name, subject, args);
}

Value Interpreter::getattr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) undefined_error(obj);
  if (!name.empty() && name[0] == '_')
    return Value::unsafe(fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, obj.type_name()));
  if (obj.is_namespace()) {
    if (const Value* v = obj.ns().attrs.find(name)) return *v;
  } else {
    if (auto m = method_of(obj, name)) return *m;
    if (obj.is_dict())
      if (const Value* v = obj.dict().find(name)) return *v;
  }
  return Value::undefined(fmt::format("'{}' has no attribute '{}'", obj.is_dict() ? "dict object" : obj.type_name(),
                                      name));
}

Value Interpreter::getitem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) undefined_error(obj);
  if (obj.is_dict()) {
    if (const Value* v = obj.dict().find(key)) return *v;
  } else if (((obj.is_list() && !obj.is_generator()) || obj.is_string()) && key.is_number() && !key.is_float()) {
    int64_t i = key.as_int();
    if (obj.is_list()) {
      const auto n = static_cast<int64_t>(obj.items().size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return obj.items()[i];
    } else {
      const Value s = slice(obj, i, i == -1 ? std::nullopt : std::optional<int64_t>(i + 1), std::nullopt);
      if (!s.str().empty()) return s;
    }
  } else if (obj.is_namespace() && key.is_string()) {
    if (const Value* v = obj.ns().attrs.find(key.str())) return *v;
  }
  if (key.is_string()) {
    if (!key.str().empty() && key.str()[0] == '_')
      return Value::unsafe(fmt::format("access to attribute '{}' of '{}' object is unsafe.", key.str(),
                                          obj.type_name()));
    if (!obj.is_dict() && !obj.is_namespace())
      if (auto m = method_of(obj, key.str())) return *m;
    if (obj.is_dict()) {
      if (auto m = method_of(obj, key.str())) return *m;
      return Value::undefined(fmt::format("'dict object' has no attribute '{}'", key.str()));
    }
    return Value::undefined(fmt::format("'{}' has no attribute '{}'", obj.type_name(), key.str()));
  }
  return Value::undefined(fmt::format("'{}' has no item {}", obj.type_name(), key.repr()));
}

Value Interpreter::eval_inner(const Expr& e, const std::shared_ptr<Frame>& f) {
  switch (e.kind) {
    case K::Literal: return e.value;
    case K::Name: return lookup(e.name, f);
    case K::List:
    case K::Tuple: {
      std::vector<Value> items;
      items.reserve(e.items.size());
      for (const auto& x : e.items) items.push_back(eval(*x, f));
      return Value::list(std::move(items), e.kind == K::Tuple);
    }
    case K::Dict: {
      auto d = std::make_shared<DictObj>();
      for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
        Value k = eval(*e.items[i], f);
        if (k.is_list() && !k.is_tuple()) throw TemplateError(ErrorKind::Type, "unhashable type: 'list'");
        if (k.is_dict()) throw TemplateError(ErrorKind::Type, "unhashable type: 'dict'");
        d->set(std::move(k), eval(*e.items[i + 1], f));
      }
      return Value(std::shared_ptr<const DictObj>(std::move(d)));
    }
    case K::GetAttr: return getattr(eval(*e.a, f), e.name);
    case K::GetItem: {
      const Value obj = eval(*e.a, f);
      if (e.b->kind == K::Slice) {
        const auto& s = e.b->items;
        std::optional<int64_t> idx[3];
        for (int i = 0; i < 3; ++i)
          if (s[i]) idx[i] = slice_index(eval(*s[i], f));
        // jinja2 compiles a slice to Python's own subscript (not environment.getitem): the TypeError propagates.
        if (obj.is_undefined()) undefined_error(obj);
        if (folding_ && ((!obj.is_string() && !obj.is_list()) || obj.is_generator()))
          return Value::undefined(fmt::format("'{}' object is not subscriptable", obj.type_name()));
        if (obj.is_dict()) throw TemplateError(ErrorKind::Type, "unhashable type: 'slice'");
        if ((!obj.is_string() && !obj.is_list()) || obj.is_generator())
          throw TemplateError(ErrorKind::Type, fmt::format("'{}' object is not subscriptable", obj.type_name()));
        return slice(obj, idx[0], idx[1], idx[2]);
      }
      return getitem(obj, eval(*e.b, f));
    }
    case K::Slice: throw TemplateError(ErrorKind::Syntax, "a slice outside of a subscript");
    case K::Call: return eval_call(e, f);
    case K::Filter: {
      const Value subject = e.a ? eval(*e.a, f) : Value();
      CallArgs args;
      eval_args(e, f, args);
      return filter(e.name, subject, args);
    }
    case K::Test: {
      const Value subject = eval(*e.a, f);
      CallArgs args;
      eval_args(e, f, args);
      return Value(test(e.name, subject, args));
    }
    case K::Neg: return negate(eval(*e.a, f));
    case K::Pos: return unary_plus(eval(*e.a, f));
    case K::Not: return Value(!eval(*e.a, f).truthy());
    case K::Add:
    case K::Sub:
    case K::Mul:
    case K::Div:
    case K::FloorDiv:
    case K::Mod:
    case K::Pow: {
      const Value a = eval(*e.a, f);
      const Value b = eval(*e.b, f);
      return binary_op(e.kind, a, b, limits_.max_output);
    }
    case K::Concat: {
      std::string s;
      for (const auto& x : e.items) {
        eval(*x, f).append_str(s);
        check_size(s.size());
      }
      return Value(std::move(s));
    }
    case K::Compare: {
      Value left = eval(*e.a, f);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.items[i], f);
        const std::string& op = e.ops[i];
        bool r;
        if (op == "==") r = equals(left, right);
        else if (op == "!=") r = !equals(left, right);
        else if (op == "in") r = contains(right, left);
        else if (op == "not in") r = !contains(right, left);
        else {
          if (left.is_undefined()) undefined_error(left);
          if (right.is_undefined()) undefined_error(right);
          if (op == "<") r = less(left, right);
          else if (op == ">") r = less(right, left);
          else if (op == "<=") r = !less(right, left);
          else r = !less(left, right);
        }
        if (!r) return Value(false);
        left = std::move(right);
      }
      return Value(true);
    }
    case K::And: {
      Value a = eval(*e.a, f);
      return a.truthy() ? eval(*e.b, f) : a;
    }
    case K::Or: {
      Value a = eval(*e.a, f);
      return a.truthy() ? a : eval(*e.b, f);
    }
    case K::CondExpr:
      // jinja2 folds `b if a else c` when `a` and the branch it picks are literals, whatever the other branch is.
      if (!folding_ && e.a->constant) {
        if (auto test = fold(*e.a, f, true)) {
          const Expr* pick = test->truthy() ? e.b.get() : e.c.get();
          if (pick && pick->constant)
            if (auto v = fold(*pick, f, false)) return *v;
        }
      }
      if (eval(*e.a, f).truthy()) return eval(*e.b, f);
      if (e.c) return eval(*e.c, f);
      return Value::undefined("the inline if-expression on line evaluated to false and no else section was defined.");
  }
  return Value();
}

}  // namespace qtune::jinja
