#include "qtune/data/bpe/json_path.h"

#include "qtune/util/error.h"

namespace qtune::data::bpe {

using nlohmann::json;

JsonPath JsonPath::key(std::string_view k) const {
  return {source, path.empty() ? std::string(k) : path + "." + std::string(k)};
}

JsonPath JsonPath::index(size_t i) const { return {source, path + "[" + std::to_string(i) + "]"}; }

std::string JsonPath::str() const { return path.empty() ? source : source + ": " + path; }

const json& json_require(const json& obj, const char* key, const JsonPath& at) {
  if (!obj.is_object()) fail("{}: expected a JSON object, got {}", at.str(), obj.type_name());
  const auto it = obj.find(key);
  if (it == obj.end()) fail("{}: missing key '{}'", at.str(), key);
  return *it;
}

namespace {

const json* optional_field(const json& obj, const char* key, const JsonPath& at) {
  if (!obj.is_object()) fail("{}: expected a JSON object, got {}", at.str(), obj.type_name());
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

}  // namespace

std::string json_string(const json& obj, const char* key, const JsonPath& at, const std::string& fallback) {
  const json* v = optional_field(obj, key, at);
  if (!v) return fallback;
  if (!v->is_string()) fail("{}: '{}' must be a string, got {}", at.str(), key, v->dump());
  return v->get<std::string>();
}

std::string json_string(const json& obj, const char* key, const JsonPath& at) {
  const json& v = json_require(obj, key, at);
  if (!v.is_string()) fail("{}: '{}' must be a string, got {}", at.str(), key, v.dump());
  return v.get<std::string>();
}

bool json_bool(const json& obj, const char* key, const JsonPath& at, bool fallback) {
  const json* v = optional_field(obj, key, at);
  if (!v) return fallback;
  if (!v->is_boolean()) fail("{}: '{}' must be true or false, got {}", at.str(), key, v->dump());
  return v->get<bool>();
}

bool json_bool(const json& obj, const char* key, const JsonPath& at) {
  const json& v = json_require(obj, key, at);
  if (!v.is_boolean()) fail("{}: '{}' must be true or false, got {}", at.str(), key, v.dump());
  return v.get<bool>();
}

std::string json_type(const json& obj, const JsonPath& at) { return json_string(obj, "type", at); }

void unsupported_type(const JsonPath& at, const std::string& type, std::string_view supported) {
  fail("{}: {} type '{}' is not supported (supported: {})", at.source, at.path, type, supported);
}

}  // namespace qtune::data::bpe
