#pragma once
// UTF-8 as the tokenizer.json pipeline needs it: walking code points, checking input, and Rust's
// String::from_utf8_lossy (what HF's ByteLevel decoder returns), which replaces each maximal invalid subpart with
// one U+FFFD, exactly as the Unicode standard recommends.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qtune::data::bpe {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not one.
size_t utf8_valid_length(std::string_view s, size_t i);

// Byte offset of the first invalid sequence, or npos when `s` is valid UTF-8.
size_t utf8_first_invalid(std::string_view s);

// Length of the code point at s[i] in valid UTF-8 (the lead byte decides).
inline size_t utf8_char_len(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// Decodes the code point at s[i] of valid UTF-8 and advances i past it.
char32_t utf8_next(std::string_view s, size_t& i);

void utf8_append(std::string& out, char32_t c);

std::string utf8_lossy(std::string_view bytes);

// Rust's char::is_whitespace / regex \s: the Unicode White_Space property.
bool is_unicode_whitespace(char32_t c);

}  // namespace qtune::data::bpe
