#pragma once
// Python's str operations on UTF-8 strings, as templates see them through jinja2: lengths, indices and slices count
// code points; whitespace is str.isspace()'s; case mapping is Unicode's (ICU), as CPython's.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qtune::jinja::py {

std::u32string decode(std::string_view s);
std::string encode(const std::u32string& s);
void append_utf8(std::string& out, char32_t c);
size_t length(std::string_view s);  // in code points
bool is_ascii(std::string_view s);

bool isspace(char32_t c);  // str.isspace(): the White_Space property and U+001C..U+001F

// Python's slice indices: the positions a[start:stop:step] takes from a sequence of `n` items. Throws a Type error
// for step 0.
std::vector<int64_t> slice_indices(int64_t n, std::optional<int64_t> start, std::optional<int64_t> stop,
                                   std::optional<int64_t> step);

std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left = true, bool right = true);
std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit = -1);
std::vector<std::string> rsplit(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit = -1);
std::vector<std::string> splitlines(std::string_view s, bool keepends = false);
std::string replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count = -1);
int64_t count(std::string_view s, std::string_view sub);
int64_t find(std::string_view s, std::string_view sub, bool reverse = false);  // in code points, -1 when absent

std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string title(std::string_view s);       // str.title()
std::string capitalize(std::string_view s);  // str.capitalize()
std::string swapcase(std::string_view s);
bool isupper(std::string_view s);
bool islower(std::string_view s);
bool isalpha(std::string_view s);
bool isdigit(std::string_view s);
bool isalnum(std::string_view s);
bool isstrspace(std::string_view s);

std::string repr(std::string_view s);  // repr() of a str: quoted, with Python's escapes
std::string float_repr(double d);      // repr() of a float: shortest round-trip digits, Python's layout
std::string int_str(int64_t i);

}  // namespace qtune::jinja::py
