#pragma once
// GPT-2's byte-level alphabet (openai/gpt-2 encoder.py bytes_to_unicode): every byte maps to one printable code
// point, so that BPE runs on any bytes without spaces or control characters in its vocabulary (0x20 → "Ġ",
// 0x0A → "Ċ"). The ByteLevel pre-tokenizer maps text into it; the ByteLevel decoder maps it back.
#include <cstdint>
#include <string>
#include <string_view>

namespace qtune::data::bpe {

// The UTF-8 of the code point byte `b` maps to.
const std::string& byte_level_char(uint8_t b);

// Appends `text` mapped byte by byte into the alphabet.
void byte_level_encode(std::string_view text, std::string& out);

// Appends the bytes that `token` spells in the alphabet; false (and `out` unchanged) when some character of it is
// not in the alphabet — HF's decoder then keeps that token's own bytes.
bool byte_level_decode(std::string_view token, std::string& out);

}  // namespace qtune::data::bpe
