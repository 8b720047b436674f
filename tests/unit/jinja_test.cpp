// The Jinja interpreter's own guarantees, beside the oracle (OracleJinja*) that compares its renders with jinja2:
// every error names the template's source, line and column, raise_exception shows the template's message, what
// qtune does not implement is refused (never rendered wrongly), and a hostile template can neither hang qtune nor
// exhaust its memory (loop iterations, call depth and output size are bounded).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "qtune/jinja/template.h"

namespace {

using qtune::jinja::ErrorKind;
using qtune::jinja::RenderLimits;
using qtune::jinja::Template;
using qtune::jinja::TemplateError;

struct Caught {
  ErrorKind kind = ErrorKind::Syntax;
  std::string what, message;
  int line = 0, column = 0;
  bool thrown = false;
};

Caught render_error(const std::string& text, const nlohmann::ordered_json& vars = nlohmann::ordered_json::object(),
                    const RenderLimits& limits = {}) {
  Caught c;
  try {
    Template(text, "test.jinja").render(vars, limits);
  } catch (const TemplateError& e) {
    c = {e.kind(), e.what(), e.message(), e.line(), e.column(), true};
  }
  return c;
}

TEST(Jinja, RaiseExceptionShowsTheTemplatesMessageWithItsPlace) {
  const auto c = render_error("line one\n{% if true %}  {{ raise_exception('System role not supported') }}{% endif %}");
  ASSERT_TRUE(c.thrown);
  EXPECT_EQ(c.kind, ErrorKind::Raised);
  EXPECT_EQ(c.message, "System role not supported");
  EXPECT_EQ(c.line, 2);
  EXPECT_EQ(c.column, 19);
  EXPECT_EQ(c.what, "test.jinja:2:19: System role not supported");
}

TEST(Jinja, UnsupportedConstructsAreErrorsNamingSourceLineAndColumn) {
  struct Case {
    std::string text;
    int line, column;
  };
  for (const Case& k : {Case{"{% extends 'base.jinja' %}", 1, 4}, Case{"x\n  {% include 'other.jinja' %}", 2, 6},
                        Case{"{% for x in xs recursive %}{% endfor %}", 1, 16},
                        Case{"{% block b %}{% endblock %}", 1, 4}, Case{"\n\n{{ 'a b' | truncate(1) }}", 3, 4},
                        Case{"{{ 'x'.encode() }}", 1, 4}, Case{"{{ '{:>5}'.format(1) }}", 1, 4}}) {
    SCOPED_TRACE(k.text);
    const auto c = render_error(k.text);
    ASSERT_TRUE(c.thrown);
    EXPECT_EQ(c.kind, ErrorKind::Unsupported) << c.what;
    EXPECT_EQ(c.line, k.line) << c.what;
    EXPECT_EQ(c.column, k.column) << c.what;
    EXPECT_NE(c.what.find("test.jinja:"), std::string::npos) << c.what;
    EXPECT_NE(c.what.find("not supported"), std::string::npos) << c.what;
  }
}

TEST(Jinja, SyntaxErrorsNameTheirLineAndColumn) {
  const auto c = render_error("ok\n{{ messages | no_such_filter }}");
  ASSERT_TRUE(c.thrown);
  EXPECT_EQ(c.kind, ErrorKind::Syntax);
  EXPECT_EQ(c.what, "test.jinja:2:15: No filter named 'no_such_filter'.");
  const auto unclosed = render_error("{% for m in messages %}\n{{ m }}");
  EXPECT_EQ(unclosed.kind, ErrorKind::Syntax);
  EXPECT_NE(unclosed.what.find("'endfor' or 'else'"), std::string::npos) << unclosed.what;
  EXPECT_EQ(render_error("{{ a !! b }}").kind, ErrorKind::Syntax);
  EXPECT_EQ(render_error("{% do x %}").kind, ErrorKind::Syntax);
}

TEST(Jinja, AnOverLongLoopIsRefused) {
  RenderLimits limits;
  limits.max_iterations = 10000;
  const auto c = render_error("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", {}, limits);
  ASSERT_TRUE(c.thrown);
  EXPECT_EQ(c.kind, ErrorKind::Limit);
  EXPECT_NE(c.what.find("loop iterations"), std::string::npos) << c.what;
  // The default bound stops the same nest of 10^10 iterations long before it would finish.
  EXPECT_EQ(render_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}").kind,
            ErrorKind::Limit);
}

TEST(Jinja, DeepRecursionIsRefused) {
  const auto c = render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_TRUE(c.thrown);
  EXPECT_EQ(c.kind, ErrorKind::Limit);
  EXPECT_NE(c.what.find("macro calls nested deeper than"), std::string::npos) << c.what;
}

TEST(Jinja, OutputAndBuiltValuesAreBounded) {
  RenderLimits limits;
  limits.max_output = 1 << 16;
  EXPECT_EQ(render_error("{% for i in range(10000) %}{{ 'xxxxxxxxxx' }}{% endfor %}", {}, limits).kind, ErrorKind::Limit);
  EXPECT_EQ(render_error("{{ 'x' * 10000000000 }}").kind, ErrorKind::Limit);
  EXPECT_EQ(render_error("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                         "{% endfor %}", {}, limits).kind,
            ErrorKind::Limit);
  // jinja2's sandbox refuses ranges above 100,000 items (an OverflowError there).
  EXPECT_EQ(render_error("{{ range(100001) | length }}").kind, ErrorKind::Type);
}

TEST(Jinja, TheSandboxRefusesWhatTransformersRefuses) {
  EXPECT_EQ(render_error("{{ [1].append(2) }}").kind, ErrorKind::Security);
  EXPECT_EQ(render_error("{{ {}.update({'a': 1}) }}").kind, ErrorKind::Security);
  EXPECT_EQ(render_error("{% set ns = namespace(_x=1) %}").kind, ErrorKind::Security);
  EXPECT_EQ(render_error("{% set ns = namespace() %}{% set ns._x = 1 %}").kind, ErrorKind::Security);
  EXPECT_EQ(render_error("{{ ''.__class__() }}").kind, ErrorKind::Security);
}

TEST(Jinja, UndefinedValuesBehaveAsJinja2sDefaultUndefined) {
  const Template t("[{{ x }}]{{ x is defined }}{{ x | length }}{% for i in x %}no{% else %}empty{% endfor %}", "t");
  EXPECT_EQ(t.render(nlohmann::ordered_json::object()).text, "[]False0empty");
  const auto c = render_error("{{ x.y }}");
  EXPECT_EQ(c.kind, ErrorKind::Undefined);
  EXPECT_EQ(c.message, "'x' is undefined");
  EXPECT_EQ(render_error("{{ m.missing.deeper }}", {{"m", {{"a", 1}}}}).message,
            "'dict object' has no attribute 'missing'");
}

TEST(Jinja, GenerationBlocksMarkTheBytesTheyWrote) {
  const Template t("<s>{% for m in messages %}{% generation %}{{ m }}|{% endgeneration %}-{% endfor %}", "t");
  EXPECT_TRUE(t.has_generation());
  const auto r = t.render({{"messages", {"ab", "é"}}});
  EXPECT_EQ(r.text, "<s>ab|-é|-");
  ASSERT_EQ(r.generation.size(), 2u);
  EXPECT_EQ(r.text.substr(r.generation[0].begin, r.generation[0].end - r.generation[0].begin), "ab|");
  EXPECT_EQ(r.text.substr(r.generation[1].begin, r.generation[1].end - r.generation[1].begin), "é|");
}

}  // namespace
