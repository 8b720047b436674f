#pragma once
#include <string>
#include <vector>

namespace qtune::data {

// The whole file; a missing or unreadable file is an error naming `what` (e.g. "--text") and the path.
std::string read_text_file(const std::string& path, const std::string& what);

// The pieces of `text` between occurrences of `separator`, stripped of surrounding whitespace, empty ones dropped.
std::vector<std::string> split_documents(const std::string& text, const std::string& separator);

}  // namespace qtune::data
