#include "qtune/data/bpe/byte_level.h"

#include <array>

#include "qtune/data/bpe/utf8.h"

namespace qtune::data::bpe {

namespace {

struct Alphabet {
  std::array<std::string, 256> to_char;
  std::array<int16_t, 324> to_byte;  // indexed by code point; every mapped code point is below 0x144

  Alphabet() {
    to_byte.fill(-1);
    // Printable Latin-1 maps to itself; the other 68 bytes take 0x100, 0x101, ... in byte order.
    auto keeps_itself = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const char32_t c = keeps_itself(b) ? static_cast<char32_t>(b) : next++;
      utf8_append(to_char[b], c);
      to_byte[c] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

const std::string& byte_level_char(uint8_t b) { return alphabet().to_char[b]; }

void byte_level_encode(std::string_view text, std::string& out) {
  const auto& a = alphabet();
  for (const char ch : text) out += a.to_char[static_cast<uint8_t>(ch)];
}

bool byte_level_decode(std::string_view token, std::string& out) {
  const auto& a = alphabet();
  const size_t start = out.size();
  for (size_t i = 0; i < token.size();) {
    const char32_t c = utf8_next(token, i);
    if (c >= a.to_byte.size() || a.to_byte[c] < 0) {
      out.resize(start);
      return false;
    }
    out.push_back(static_cast<char>(a.to_byte[c]));
  }
  return true;
}

}  // namespace qtune::data::bpe
