#pragma once
// A JSON file read whole, or an error naming the file and what the parser said. Nesting is bounded (HF tokenizers'
// serde_json refuses past the same depth): the code that walks a document recurses into it, and a file of a few
// megabytes can nest a million levels deep.
#include <nlohmann/json.hpp>

#include <string>

namespace qtune::io {

// serde_json's recursion limit: 128 open arrays or objects fail, 127 pass.
constexpr int kMaxJsonDepth = 127;

nlohmann::json read_json_file(const std::string& path);
// `text` parsed; errors name `source`. Rejects nesting deeper than kMaxJsonDepth before parsing.
nlohmann::json parse_json_text(const std::string& text, const std::string& source);

}  // namespace qtune::io
