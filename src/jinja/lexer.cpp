#include "qtune/jinja/lexer.h"

#include <cctype>
#include <cerrno>
#include <cstring>

#include "qtune/data/bpe/utf8.h"
#include "qtune/jinja/pystr.h"

namespace qtune::jinja {
namespace {

// Python's `\s` on a str: the code point at s[i] is whitespace; `len` receives its length in bytes.
bool space_at(const std::string& s, size_t i, size_t& len) {
  if (i >= s.size()) return false;
  size_t j = i;
  const char32_t c = data::bpe::utf8_next(s, j);
  len = j - i;
  return py::isspace(c);
}

size_t skip_space(const std::string& s, size_t i) {
  size_t len;
  while (space_at(s, i, len)) i += len;
  return i;
}

bool at(const std::string& s, size_t i, const char* lit) { return s.compare(i, std::strlen(lit), lit) == 0; }

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// Python's str.rstrip() of text[b, e): the new end.
size_t rstrip_end(const std::string& s, size_t b, size_t e) {
  while (e > b) {
    size_t start = e - 1;
    while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t len;
    if (!space_at(s, start, len) || start + len != e) break;
    e = start;
  }
  return e;
}

class Lexer {
 public:
  Lexer(std::string source, std::string name) : src_(std::move(source)), name_(std::move(name)) {}

  Lexed run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      const size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        data(pos, src_.size());
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      const char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+') ? src_[tag + 2] : 0;
      size_t raw_end = 0;
      const bool raw = kind == '%' && raw_begin(tag, raw_end);
      data_before_tag(pos, tag, sign, kind != '{', line_starting);
      size_t p = tag + 2 + (sign ? 1 : 0);
      if (raw) {
        pos = raw_body(raw_end, line_starting);
      } else if (kind == '#') {
        pos = comment(tag, p, line_starting);
      } else {
        push(kind == '{' ? Tok::VarBegin : Tok::BlockBegin, "", tag);
        pos = tag_body(p, kind == '%', line_starting);
      }
    }
    push(Tok::Eof, "", static_cast<uint32_t>(src_.size()));
    return Lexed{std::move(src_), std::move(tokens_)};
  }

 private:
  [[noreturn]] void error(size_t offset, const std::string& message) {
    const Pos p = position_of(src_, static_cast<uint32_t>(offset));
    throw TemplateError(ErrorKind::Syntax, message, name_, p.line, p.column);
  }

  void push(Tok t, std::string text, size_t offset) {
    Token tok;
    tok.type = t;
    tok.text = std::move(text);
    tok.offset = static_cast<uint32_t>(offset);
    tokens_.push_back(std::move(tok));
  }

  void data(size_t b, size_t e) {
    if (e > b) push(Tok::Data, src_.substr(b, e - b), b);
  }

  size_t find_tag(size_t pos) const {
    for (size_t i = src_.find('{', pos); i != std::string::npos; i = src_.find('{', i + 1))
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    return std::string::npos;
  }

  // The text before a tag, with `-` (strip all whitespace) or lstrip_blocks (spaces before a block or comment tag
  // alone on its line) applied.
  void data_before_tag(size_t b, size_t e, char sign, bool block_or_comment, bool line_starting) {
    if (sign == '-') {
      data(b, rstrip_end(src_, b, e));
      return;
    }
    if (sign != '+' && block_or_comment) {
      const size_t nl = src_.rfind('\n', e == 0 ? 0 : e - 1);
      const size_t l_pos = nl == std::string::npos || nl < b ? b : nl + 1;
      if ((l_pos > b || line_starting) && l_pos < e && skip_space(src_, l_pos) >= e) {
        data(b, l_pos);
        return;
      }
    }
    data(b, e);
  }

  // `{%(-|+|)\s*raw\s*(-%}\s*|%})` at `tag`; raw_end is where its content starts.
  bool raw_begin(size_t tag, size_t& raw_end) {
    size_t p = tag + 2;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
    p = skip_space(src_, p);
    if (!at(src_, p, "raw")) return false;
    p = skip_space(src_, p + 3);
    if (at(src_, p, "-%}")) {
      raw_end = skip_space(src_, p + 3);
      return true;
    }
    if (at(src_, p, "%}")) {
      raw_end = p + 2;
      return true;
    }
    return false;
  }

  size_t raw_body(size_t b, bool& line_starting) {
    for (size_t i = src_.find("{%", b); i != std::string::npos; i = src_.find("{%", i + 1)) {
      size_t p = i + 2;
      const char sign = p < src_.size() && (src_[p] == '-' || src_[p] == '+') ? src_[p] : 0;
      if (sign) ++p;
      p = skip_space(src_, p);
      if (!at(src_, p, "endraw")) continue;
      p = skip_space(src_, p + 6);
      size_t end;
      if (at(src_, p, "+%}")) end = p + 3;
      else if (at(src_, p, "-%}")) end = skip_space(src_, p + 3);
      else if (at(src_, p, "%}")) end = p + 2 + (p + 2 < src_.size() && src_[p + 2] == '\n');
      else continue;
      // The raw content is text, stripped as the text before a block tag is.
      data_before_tag(b, i, sign, true, false);
      line_starting = src_[end - 1] == '\n';
      return end;
    }
    error(b, "Missing end of raw directive");
  }

  size_t comment(size_t tag, size_t p, bool& line_starting) {
    const size_t close = src_.find("#}", p);
    if (close == std::string::npos) error(tag, "Missing end of comment tag");
    size_t end = close + 2;
    const char before = close > p ? src_[close - 1] : 0;
    if (before == '-') end = skip_space(src_, end);
    else if (before != '+' && end < src_.size() && src_[end] == '\n') ++end;
    line_starting = src_[end - 1] == '\n';
    return end;
  }

  // The tokens of a `{{ .. }}` or `{% .. %}` tag, up to and including its end.
  size_t tag_body(size_t p, bool block, bool& line_starting) {
    std::vector<char> balance;
    const size_t open = p;
    while (true) {
      if (p >= src_.size()) error(open, block ? "unexpected end of template, expected end of statement block"
                                              : "unexpected end of template, expected end of print statement");
      if (balance.empty()) {
        size_t end = 0;
        if (block) {
          if (at(src_, p, "+%}")) end = p + 3;
          else if (at(src_, p, "-%}")) end = skip_space(src_, p + 3);
          else if (at(src_, p, "%}")) end = p + 2 + (p + 2 < src_.size() && src_[p + 2] == '\n');
        } else {
          if (at(src_, p, "-}}")) end = skip_space(src_, p + 3);
          else if (at(src_, p, "}}")) end = p + 2;
        }
        if (end) {
          push(block ? Tok::BlockEnd : Tok::VarEnd, "", p);
          line_starting = src_[end - 1] == '\n';
          return end;
        }
      }
      size_t len;
      if (space_at(src_, p, len)) {
        p = skip_space(src_, p);
        continue;
      }
      const char c = src_[p];
      if (is_digit(c)) {
        p = number(p);
      } else if (is_name_start(c)) {
        size_t e = p;
        while (e < src_.size() && is_name_char(src_[e])) ++e;
        push(Tok::Name, src_.substr(p, e - p), p);
        p = e;
      } else if (c == '\'' || c == '"') {
        p = string(p);
      } else {
        p = op(p, balance);
      }
    }
  }

  size_t digits(size_t p, bool (*ok)(char)) const {  // (\d+_)*\d+ style runs: digits with single underscores
    size_t e = p;
    while (e < src_.size() && (ok(src_[e]) || (src_[e] == '_' && e > p && e + 1 < src_.size() && ok(src_[e + 1]))))
      ++e;
    return e;
  }

  size_t number(size_t p) {
    auto dec = [](char c) { return is_digit(c); };
    const bool after_dot = p > 0 && src_[p - 1] == '.';
    size_t e = digits(p, dec);
    // Float: digits then a fraction and/or an exponent (jinja2's float_re, not after a '.').
    if (!after_dot) {
      size_t f = e;
      bool is_float = false;
      if (f + 1 < src_.size() && src_[f] == '.' && is_digit(src_[f + 1])) {
        f = digits(f + 1, dec);
        is_float = true;
      }
      if (f < src_.size() && (src_[f] == 'e' || src_[f] == 'E')) {
        size_t g = f + 1;
        if (g < src_.size() && (src_[g] == '+' || src_[g] == '-')) ++g;
        if (g < src_.size() && is_digit(src_[g])) {
          f = digits(g, dec);
          is_float = true;
        }
      }
      if (is_float) {
        std::string text;
        for (size_t i = p; i < f; ++i)
          if (src_[i] != '_') text += src_[i];
        push(Tok::Float, text, p);
        tokens_.back().float_value = std::strtod(text.c_str(), nullptr);
        return f;
      }
    }
    // Integer: 0b.., 0o.., 0x.., or decimal (a leading 0 only in 0, 00, 0_0 ...).
    int base = 10;
    size_t start = p;
    if (src_[p] == '0' && p + 1 < src_.size()) {
      const char x = static_cast<char>(src_[p + 1] | 0x20);
      if (x == 'b' || x == 'o' || x == 'x') {
        base = x == 'b' ? 2 : x == 'o' ? 8 : 16;
        start = p + 2;
      }
    }
    std::string text;
    if (base != 10) {
      e = start;
      while (e < src_.size()) {
        const char ch = static_cast<char>(src_[e] | 0x20);
        const bool ok = base == 2 ? (ch == '0' || ch == '1') : base == 8 ? (ch >= '0' && ch <= '7')
                                                                          : (is_digit(ch) || (ch >= 'a' && ch <= 'f'));
        if (ok) text += src_[e];
        else if (src_[e] != '_') break;
        ++e;
      }
      if (text.empty()) error(p, "invalid integer literal");
    } else if (src_[p] == '0') {
      e = p + 1;
      while (e < src_.size() && (src_[e] == '0' || (src_[e] == '_' && e + 1 < src_.size() && src_[e + 1] == '0'))) ++e;
      text = "0";
    } else {
      for (size_t i = p; i < e; ++i)
        if (src_[i] != '_') text += src_[i];
    }
    errno = 0;
    const long long v = std::strtoll(text.c_str(), nullptr, base);
    if (errno == ERANGE) error(p, "integer literal out of qtune's 64-bit range");
    push(Tok::Int, src_.substr(p, e - p), p);
    tokens_.back().int_value = v;
    return e;
  }

  size_t string(size_t p) {
    const char q = src_[p];
    std::string value;
    size_t i = p + 1;
    while (true) {
      if (i >= src_.size()) error(p, fmt::format("unexpected char {} at {}", py::repr(std::string(1, q)), p));
      const char c = src_[i];
      if (c == q) break;
      if (c != '\\') {
        value += c;
        ++i;
        continue;
      }
      if (i + 1 >= src_.size()) error(p, "unterminated string");
      const char e = src_[i + 1];
      i += 2;
      auto hex = [&](int n) {
        char32_t cp = 0;
        for (int k = 0; k < n; ++k, ++i) {
          if (i >= src_.size() || !std::isxdigit(static_cast<unsigned char>(src_[i])))
            error(p, fmt::format("truncated \\{}{} escape", e, std::string(n, 'X')));
          const char h = static_cast<char>(src_[i] | 0x20);
          cp = cp * 16 + static_cast<char32_t>(is_digit(h) ? h - '0' : h - 'a' + 10);
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) error(p, "illegal Unicode character in a string");
        py::append_utf8(value, cp);
      };
      switch (e) {
        case '\n': break;  // a backslash-newline continues the line
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case 'a': value += '\a'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'n': value += '\n'; break;
        case 'r': value += '\r'; break;
        case 't': value += '\t'; break;
        case 'v': value += '\v'; break;
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        case 'N': error(p, "\\N{...} escapes are not supported by qtune");
        default:
          if (e >= '0' && e <= '7') {
            char32_t cp = static_cast<char32_t>(e - '0');
            for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k, ++i)
              cp = cp * 8 + static_cast<char32_t>(src_[i] - '0');
            py::append_utf8(value, cp);
          } else {
            value += '\\';
            value += e;
          }
      }
    }
    push(Tok::String, std::move(value), p);
    return i + 1;
  }

  size_t op(size_t p, std::vector<char>& balance) {
    static const char* const two[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* o : two)
      if (at(src_, p, o)) {
        push(Tok::Op, o, p);
        return p + 2;
      }
    const char c = src_[p];
    if (!std::strchr("+-/*%~[](){}=<>.:|,;", c) || c == 0) {
      size_t j = p;
      data::bpe::utf8_next(src_, j);
      error(p, fmt::format("unexpected char {} at {}", py::repr(src_.substr(p, j - p)), p));
    }
    if (c == '(' || c == '[' || c == '{') balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    if (c == ')' || c == ']' || c == '}') {
      if (balance.empty()) error(p, fmt::format("unexpected '{}'", c));
      if (balance.back() != c) error(p, fmt::format("unexpected '{}', expected '{}'", c, balance.back()));
      balance.pop_back();
    }
    push(Tok::Op, std::string(1, c), p);
    return p + 1;
  }

  std::string src_;
  std::string name_;
  std::vector<Token> tokens_;
};

}  // namespace

Pos position_of(const std::string& source, uint32_t offset) {
  Pos p{1, 1};
  size_t line_start = 0;
  for (size_t i = 0; i < offset && i < source.size(); ++i)
    if (source[i] == '\n') {
      ++p.line;
      line_start = i + 1;
    }
  p.column = 1 + static_cast<int>(py::length(std::string_view(source).substr(line_start, offset - line_start)));
  return p;
}

Lexed lex(const std::string& text, const std::string& source_name) {
  if (const size_t bad = data::bpe::utf8_first_invalid(text); bad != std::string::npos)
    throw TemplateError(ErrorKind::Syntax, fmt::format("not UTF-8 at byte {}", bad), source_name);
  // Newlines normalized to "\n"; one trailing newline dropped (jinja2's keep_trailing_newline=False).
  std::string src;
  src.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r') {
      src += '\n';
      if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
    } else {
      src += text[i];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(std::move(src), source_name).run();
}

}  // namespace qtune::jinja
