#pragma once
// Splits a template into text and the tokens of its tags, as jinja2's lexer does under transformers' settings:
// trim_blocks (the newline after a block or comment tag is dropped), lstrip_blocks (spaces and tabs before a block
// or comment tag on its line are dropped), the manual `-`/`+` markers, `{% raw %}`, newlines normalized to "\n" and
// one trailing newline of the template dropped (keep_trailing_newline off).
#include <cstdint>
#include <string>
#include <vector>

#include "qtune/jinja/error.h"

namespace qtune::jinja {

enum class Tok { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  Tok type = Tok::Eof;
  std::string text;  // the text of Data, a Name, an operator, a String's decoded value
  int64_t int_value = 0;
  double float_value = 0;
  uint32_t offset = 0;  // in the normalized source
};

// The normalized source (what offsets refer to) and its tokens; errors name `source_name`, line and column.
struct Lexed {
  std::string source;
  std::vector<Token> tokens;
};

Lexed lex(const std::string& text, const std::string& source_name);

// Line and column (1-based, columns in code points) of a byte offset in a normalized source.
Pos position_of(const std::string& source, uint32_t offset);

}  // namespace qtune::jinja
