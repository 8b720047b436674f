#include "qtune/data/text_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::data {

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{} {}: cannot read: {}", what, path, std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> split_documents(const std::string& text, const std::string& separator) {
  std::vector<std::string> docs;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = separator.empty() ? std::string::npos : text.find(separator, start);
    if (end == std::string::npos) end = text.size();
    auto piece = strip(text.substr(start, end - start), " \t\r\n");
    if (!piece.empty()) docs.push_back(std::move(piece));
    start = end + std::max<size_t>(separator.size(), 1);
  }
  return docs;
}

}  // namespace qtune::data
