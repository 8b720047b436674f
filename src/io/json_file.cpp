#include "qtune/io/json_file.h"

#include <fstream>
#include <sstream>
#include <string_view>

#include "qtune/util/error.h"

namespace qtune::io {
namespace {

// The offset of the first '[' or '{' nested deeper than `limit`, or npos. Strings are skipped, so brackets inside
// them do not count; text that is not JSON is left to the parser.
size_t first_too_deep(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return i;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return std::string_view::npos;
}

}  // namespace

nlohmann::json parse_json_text(const std::string& text, const std::string& source) {
  if (const size_t at = first_too_deep(text, kMaxJsonDepth); at != std::string_view::npos)
    fail("{}: JSON nested more than {} levels deep (at byte {}): no tokenizer or config nests so deep, and HF "
         "tokenizers refuses it too (corrupt file?)", source, kMaxJsonDepth, at);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON (truncated?): {}", source, e.what());
  }
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot be read", path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_json_text(text.str(), path);
}

}  // namespace qtune::io
