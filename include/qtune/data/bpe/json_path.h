#pragma once
// Reading a tokenizer.json with messages that name the file and the key: "<file>: pre_tokenizer.pretokenizers[1]:
// 'behavior' must be one of ...". Every component parser takes the JsonPath of the object it reads.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "qtune/util/error.h"

namespace qtune::data::bpe {

struct JsonPath {
  std::string source;  // the file (or GGUF) the JSON came from
  std::string path;    // dotted key path inside it, "" for the top level

  JsonPath key(std::string_view k) const;
  JsonPath index(size_t i) const;
  std::string str() const;  // "source: path", or just the source at the top level
};

// obj[key]; fails when obj is not an object or has no such key.
const nlohmann::json& json_require(const nlohmann::json& obj, const char* key, const JsonPath& at);
// obj[key] as a string / bool; `fallback` when the key is absent or null; fails when it has another type.
std::string json_string(const nlohmann::json& obj, const char* key, const JsonPath& at, const std::string& fallback);
std::string json_string(const nlohmann::json& obj, const char* key, const JsonPath& at);  // required
bool json_bool(const nlohmann::json& obj, const char* key, const JsonPath& at, bool fallback);
bool json_bool(const nlohmann::json& obj, const char* key, const JsonPath& at);  // required
// The component's "type" field.
std::string json_type(const nlohmann::json& obj, const JsonPath& at);

// The parts of a Sequence component: obj[key] must be a list of non-null component objects, each read by `parse`
// (the component parser itself, called with the part's path). `what` names a part in messages ("a decoder").
template <typename T, typename Parse>
std::vector<std::unique_ptr<T>> parse_sequence(const nlohmann::json& obj, const char* key, const JsonPath& at,
                                               const char* what, Parse parse) {
  const nlohmann::json& list = json_require(obj, key, at);
  if (!list.is_array()) fail("{}: '{}' must be a list", at.str(), key);
  std::vector<std::unique_ptr<T>> parts;
  for (size_t i = 0; i < list.size(); ++i) {
    const JsonPath part_at = at.key(key).index(i);
    if (list[i].is_null()) fail("{}: expected {} object, got null", part_at.str(), what);
    parts.push_back(parse(list[i], part_at));
  }
  return parts;
}

// "<file>: <path> type 'X' is not supported (supported: ...)".
[[noreturn]] void unsupported_type(const JsonPath& at, const std::string& type, std::string_view supported);

}  // namespace qtune::data::bpe
