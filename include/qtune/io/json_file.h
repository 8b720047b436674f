#pragma once
// A JSON file read whole, or an error naming the file and what the parser said.
#include <nlohmann/json.hpp>

#include <string>

namespace qtune::io {

nlohmann::json read_json_file(const std::string& path);

}  // namespace qtune::io
