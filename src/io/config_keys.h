#pragma once
// Reading typed keys of a config.json, each error naming the file and the key (hf_config.cpp, model_family.cpp).
// Header-only and torch-free, like the parsers that use it (their fuzzer builds them alone).
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::io::config_keys {

using json = nlohmann::json;

// Sizes above these are not real models, and bounding them keeps parameter counts inside int64.
constexpr int64_t kMaxWidth = 1 << 20;  // hidden, intermediate, heads, head_dim, window, positions
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxLayers = 1 << 12;

// is_number_integer() is also true for unsigned values above INT64_MAX, which get<int64_t>() would wrap
// (2^64-1 read as -1).
inline bool is_int64(const json& v) {
  return v.is_number_integer() &&
         !(v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
}

// The value of `key`, or nullptr when it is absent or null (transformers reads null as "not set").
inline const json* find(const json& j, const char* key) {
  auto it = j.find(key);
  return (it == j.end() || it->is_null()) ? nullptr : &*it;
}

inline int64_t get_int(const json& j, const char* key, const std::string& src, std::optional<int64_t> fallback = {}) {
  const json* v = find(j, key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    fail("{}: missing required key '{}' (an integer)", src, key);
  }
  if (!is_int64(*v)) fail("{}: key '{}' must be an integer, got {}", src, key, json_show(*v));
  return v->get<int64_t>();
}

inline int64_t get_positive(const json& j, const char* key, const std::string& src,
                            std::optional<int64_t> fallback = {}, int64_t max = kMaxWidth) {
  const int64_t v = get_int(j, key, src, fallback);
  if (v <= 0) fail("{}: key '{}' must be a positive integer, got {}", src, key, v);
  if (v > max) fail("{}: key '{}' = {} is larger than any supported model (at most {})", src, key, v, max);
  return v;
}

inline double get_double(const json& j, const char* key, const std::string& src, std::optional<double> fallback = {}) {
  const json* v = find(j, key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    fail("{}: missing required key '{}' (a number)", src, key);
  }
  if (!v->is_number()) fail("{}: key '{}' must be a number, got {}", src, key, json_show(*v));
  return v->get<double>();
}

inline bool get_bool(const json& j, const char* key, const std::string& src, bool fallback) {
  const json* v = find(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) fail("{}: key '{}' must be true or false, got {}", src, key, json_show(*v));
  return v->get<bool>();
}

inline std::optional<int64_t> get_optional_int(const json& j, const char* key, const std::string& src) {
  const json* v = find(j, key);
  if (v == nullptr) return std::nullopt;
  if (!is_int64(*v)) fail("{}: key '{}' must be an integer or null, got {}", src, key, json_show(*v));
  return v->get<int64_t>();
}

// A positive number or null (a soft-cap, a scalar that may be switched off).
inline std::optional<double> get_optional_positive(const json& j, const char* key, const std::string& src) {
  const json* v = find(j, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number() || !(v->get<double>() > 0) || !std::isfinite(v->get<double>()))
    fail("{}: key '{}' must be a positive number or null, got {}", src, key, json_show(*v));
  return v->get<double>();
}

inline std::string get_string(const json& j, const char* key, const std::string& src, const std::string& fallback) {
  const json* v = find(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_string()) fail("{}: key '{}' must be a string, got {}", src, key, json_show(*v));
  return v->get<std::string>();
}

}  // namespace qtune::io::config_keys
