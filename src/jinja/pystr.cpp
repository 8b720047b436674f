#include "qtune/jinja/pystr.h"

#include <unicode/uchar.h>
#include <unicode/locid.h>
#include <unicode/unistr.h>

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "qtune/jinja/error.h"

namespace qtune::jinja::py {
namespace {

char32_t next_cp(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const size_t n = b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
  char32_t c = b0 & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < n && i + k < s.size(); ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return c;
}

std::u32string chars_set(const std::optional<std::string>& chars) {
  return chars ? decode(*chars) : std::u32string();
}

bool cased(char32_t c) { return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_CASED); }
bool is_upper_cp(char32_t c) { return u_isupper(static_cast<UChar32>(c)); }
bool is_lower_cp(char32_t c) { return u_islower(static_cast<UChar32>(c)); }
bool is_title_cp(char32_t c) { return u_istitle(static_cast<UChar32>(c)); }

std::string icu_case(std::string_view s, bool up) {
  if (is_ascii(s)) {
    std::string out(s);
    for (char& ch : out) {
      if (up && ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 32);
      if (!up && ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch + 32);
    }
    return out;
  }
  auto u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  if (up) u.toUpper(icu::Locale::getRoot());
  else u.toLower(icu::Locale::getRoot());
  std::string out;
  u.toUTF8String(out);
  return out;
}

std::string case_of_cp(char32_t c, int how) {  // 0 lower, 1 upper, 2 title
  if (how == 2) {
    std::string out;
    append_utf8(out, static_cast<char32_t>(u_totitle(static_cast<UChar32>(c))));
    return out;
  }
  std::string s;
  append_utf8(s, c);
  return icu_case(s, how == 1);
}

}  // namespace

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

std::u32string decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out += next_cp(s, i);
  return out;
}

std::string encode(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

size_t length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

bool isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::vector<int64_t> slice_indices(int64_t n, std::optional<int64_t> start, std::optional<int64_t> stop,
                                   std::optional<int64_t> step) {
  const int64_t st = step.value_or(1);
  if (st == 0) throw TemplateError(ErrorKind::Type, "slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) x += n;
    if (st > 0) return x < 0 ? int64_t{0} : (x > n ? n : x);
    return x < 0 ? int64_t{-1} : (x >= n ? n - 1 : x);
  };
  std::vector<int64_t> out;
  if (st > 0) {
    const int64_t b = clamp(start, 0), e = clamp(stop, n);
    for (int64_t i = b; i < e; i += st) out.push_back(i);
  } else {
    const int64_t b = clamp(start, n - 1), e = clamp(stop, -1);
    for (int64_t i = b; i > e; i += st) out.push_back(i);
  }
  return out;
}

std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  const std::u32string set = chars_set(chars);
  auto stripped = [&](char32_t c) { return chars ? set.find(c) != std::u32string::npos : isspace(c); };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      size_t i = b;
      if (!stripped(next_cp(s, i))) break;
      b = i;
    }
  }
  if (right) {
    while (e > b) {
      size_t start = e - 1;
      while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      size_t i = start;
      if (!stripped(next_cp(s, i))) break;
      e = start;
    }
  }
  return std::string(s.substr(b, e - b));
}

std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    if (sep->empty()) throw TemplateError(ErrorKind::Type, "empty separator");
    size_t pos = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      const size_t at = s.find(*sep, pos);
      if (at == std::string_view::npos) break;
      out.emplace_back(s.substr(pos, at - pos));
      pos = at + sep->size();
    }
    out.emplace_back(s.substr(pos));
    return out;
  }
  size_t i = 0;
  auto skip_space = [&] {
    while (i < s.size()) {
      size_t j = i;
      if (!isspace(next_cp(s, j))) break;
      i = j;
    }
  };
  skip_space();
  while (i < s.size()) {
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
      // The rest, with its trailing whitespace removed, is the last piece.
      out.push_back(strip(s.substr(i), std::nullopt, false, true));
      return out;
    }
    const size_t b = i;
    while (i < s.size()) {
      size_t j = i;
      if (isspace(next_cp(s, j))) break;
      i = j;
    }
    out.emplace_back(s.substr(b, i - b));
    skip_space();
  }
  return out;
}

std::vector<std::string> rsplit(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit) {
  if (maxsplit < 0) return split(s, sep, -1);
  std::vector<std::string> out;
  if (sep) {
    if (sep->empty()) throw TemplateError(ErrorKind::Type, "empty separator");
    size_t end = s.size();
    while (static_cast<int64_t>(out.size()) < maxsplit) {
      if (end < sep->size()) break;
      const size_t at = s.rfind(*sep, end - sep->size());
      if (at == std::string_view::npos) break;
      out.emplace_back(s.substr(at + sep->size(), end - at - sep->size()));
      end = at;
    }
    out.emplace_back(s.substr(0, end));
    return {out.rbegin(), out.rend()};
  }
  const std::u32string u = decode(s);
  int64_t i = static_cast<int64_t>(u.size());
  while (i > 0 && isspace(u[i - 1])) --i;
  while (i > 0) {
    if (static_cast<int64_t>(out.size()) >= maxsplit) {
      out.push_back(strip(encode(u.substr(0, i)), std::nullopt, true, false));
      break;
    }
    int64_t b = i;
    while (b > 0 && !isspace(u[b - 1])) --b;
    out.push_back(encode(u.substr(b, i - b)));
    i = b;
    while (i > 0 && isspace(u[i - 1])) --i;
  }
  return {out.rbegin(), out.rend()};
}

std::vector<std::string> splitlines(std::string_view s, bool keepends) {
  const std::u32string u = decode(s);
  std::vector<std::string> out;
  size_t b = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    const char32_t c = u[i];
    const bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
                     c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) continue;
    size_t end = i + 1;
    if (c == '\r' && i + 1 < u.size() && u[i + 1] == '\n') end = i + 2;
    out.push_back(encode(u.substr(b, (keepends ? end : i) - b)));
    b = end;
    i = end - 1;
  }
  if (b < u.size()) out.push_back(encode(u.substr(b)));
  return out;
}

std::string replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `repl` before every code point and at the end.
    int64_t n = 0;
    size_t i = 0;
    while (i <= s.size()) {
      if (count >= 0 && n >= count) {
        out.append(s.substr(i));
        break;
      }
      out.append(repl);
      ++n;
      if (i == s.size()) break;
      size_t j = i;
      next_cp(s, j);
      out.append(s.substr(i, j - i));
      i = j;
    }
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t at = s.find(old, pos);
    if (at == std::string_view::npos) break;
    out.append(s.substr(pos, at - pos));
    out.append(repl);
    pos = at + old.size();
    ++n;
  }
  out.append(s.substr(pos));
  return out;
}

int64_t count(std::string_view s, std::string_view sub) {
  if (sub.empty()) return static_cast<int64_t>(length(s)) + 1;
  int64_t n = 0;
  for (size_t pos = s.find(sub); pos != std::string_view::npos; pos = s.find(sub, pos + sub.size())) ++n;
  return n;
}

int64_t find(std::string_view s, std::string_view sub, bool reverse) {
  const size_t at = reverse ? s.rfind(sub) : s.find(sub);
  if (at == std::string_view::npos) return -1;
  return static_cast<int64_t>(length(s.substr(0, at)));
}

std::string upper(std::string_view s) { return icu_case(s, true); }
std::string lower(std::string_view s) { return icu_case(s, false); }

std::string title(std::string_view s) {
  std::string out;
  bool previous_cased = false;
  for (size_t i = 0; i < s.size();) {
    const char32_t c = next_cp(s, i);
    if (is_upper_cp(c) || is_title_cp(c)) {
      out += previous_cased ? case_of_cp(c, 0) : (is_title_cp(c) ? encode(std::u32string(1, c)) : case_of_cp(c, 2));
      previous_cased = true;
    } else if (is_lower_cp(c)) {
      out += previous_cased ? encode(std::u32string(1, c)) : case_of_cp(c, 2);
      previous_cased = true;
    } else {
      append_utf8(out, c);
      previous_cased = cased(c);
    }
  }
  return out;
}

std::string capitalize(std::string_view s) {
  if (s.empty()) return "";
  size_t i = 0;
  const char32_t first = next_cp(s, i);
  return case_of_cp(first, 2) + lower(s.substr(i));
}

std::string swapcase(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const char32_t c = next_cp(s, i);
    if (is_upper_cp(c)) out += case_of_cp(c, 0);
    else if (is_lower_cp(c)) out += case_of_cp(c, 1);
    else append_utf8(out, c);
  }
  return out;
}

bool isupper(std::string_view s) {
  bool any = false;
  for (size_t i = 0; i < s.size();) {
    const char32_t c = next_cp(s, i);
    if (is_lower_cp(c) || is_title_cp(c)) return false;
    any = any || is_upper_cp(c);
  }
  return any;
}

bool islower(std::string_view s) {
  bool any = false;
  for (size_t i = 0; i < s.size();) {
    const char32_t c = next_cp(s, i);
    if (is_upper_cp(c) || is_title_cp(c)) return false;
    any = any || is_lower_cp(c);
  }
  return any;
}

namespace {
template <typename F>
bool all_of(std::string_view s, F f) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();)
    if (!f(next_cp(s, i))) return false;
  return true;
}
bool alpha_cp(char32_t c) { return u_isalpha(static_cast<UChar32>(c)); }
bool digit_cp(char32_t c) {  // Python: Numeric_Type Decimal or Digit
  const int t = u_getIntPropertyValue(static_cast<UChar32>(c), UCHAR_NUMERIC_TYPE);
  return t == U_NT_DECIMAL || t == U_NT_DIGIT;
}
}  // namespace

bool isalpha(std::string_view s) { return all_of(s, alpha_cp); }
bool isdigit(std::string_view s) { return all_of(s, digit_cp); }
bool isalnum(std::string_view s) { return all_of(s, [](char32_t c) { return alpha_cp(c) || digit_cp(c); }); }
bool isstrspace(std::string_view s) { return all_of(s, [](char32_t c) { return isspace(c); }); }

std::string repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t i = 0; i < s.size();) {
    const char32_t c = next_cp(s, i);
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned>(c));
    } else if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      // str.isprintable(): not a control, format, surrogate, private-use, unassigned or separator character.
      const int8_t t = u_charType(static_cast<UChar32>(c));
      const bool printable = !(t == U_CONTROL_CHAR || t == U_FORMAT_CHAR || t == U_SURROGATE ||
                               t == U_PRIVATE_USE_CHAR || t == U_UNASSIGNED || t == U_SPACE_SEPARATOR ||
                               t == U_LINE_SEPARATOR || t == U_PARAGRAPH_SEPARATOR);
      if (printable) append_utf8(out, c);
      else if (c <= 0xFF) out += fmt::format("\\x{:02x}", static_cast<unsigned>(c));
      else if (c <= 0xFFFF) out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
      else out += fmt::format("\\U{:08x}", static_cast<unsigned>(c));
    }
  }
  out += quote;
  return out;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  const std::string sci(buf, r.ptr);  // "-1.2345e+02"
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::atoi(sci.c_str() + e + 1);
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {  // Python's repr: fixed notation for 1e-4 <= |d| < 1e16
    if (exp >= 0) {
      const size_t int_len = static_cast<size_t>(exp) + 1;
      if (digits.size() <= int_len) {
        out += digits + std::string(int_len - digits.size(), '0') + ".0";
      } else {
        out += digits.substr(0, int_len) + "." + digits.substr(int_len);
      }
    } else {
      out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  out += fmt::format("e{}{:02d}", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return out;
}

std::string int_str(int64_t i) { return std::to_string(i); }

}  // namespace qtune::jinja::py
