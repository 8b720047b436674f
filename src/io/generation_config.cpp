#include "qtune/io/generation_config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/io/atomic_file.h"
#include "qtune/io/json_file.h"
#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::io {

std::optional<GenerationConfig> GenerationConfig::load(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const auto path = (fs::path(model_dir) / "generation_config.json").string();
  if (!fs::is_directory(model_dir) || !fs::exists(path)) return std::nullopt;
  const auto j = read_json_file(path);
  if (!j.is_object()) fail("{}: expected a JSON object", path);
  auto present = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  auto integer = [&](const char* key, const nlohmann::json& v) {
    if (!v.is_number_integer()) fail("{}: key '{}' must hold integers, got {}", path, key, json_show(v));
    return v.get<int64_t>();
  };
  GenerationConfig g;
  if (present("eos_token_id")) {
    const auto& e = j["eos_token_id"];
    if (e.is_array())
      for (const auto& id : e) g.eos_token_ids.push_back(integer("eos_token_id", id));
    else
      g.eos_token_ids.push_back(integer("eos_token_id", e));
  }
  if (present("do_sample")) {
    if (!j["do_sample"].is_boolean()) fail("{}: key 'do_sample' must be true or false, got {}", path, json_show(j["do_sample"]));
    g.do_sample = j["do_sample"].get<bool>();
  }
  auto number = [&](const char* key, double lo, double hi) -> std::optional<double> {
    if (!present(key)) return std::nullopt;
    if (!j[key].is_number()) fail("{}: key '{}' must be a number, got {}", path, key, json_show(j[key]));
    const double v = j[key].get<double>();
    if (!(v >= lo && v <= hi)) fail("{}: key '{}' = {} must lie in [{}, {}]", path, key, v, lo, hi);
    return v;
  };
  g.temperature = number("temperature", 0.0, 1e6);
  g.top_p = number("top_p", 0.0, 1.0);
  if (present("top_k")) g.top_k = integer("top_k", j["top_k"]);
  if (g.top_k && *g.top_k < 0) fail("{}: key 'top_k' must be >= 0, got {}", path, *g.top_k);
  if (present("max_new_tokens")) g.max_new_tokens = integer("max_new_tokens", j["max_new_tokens"]);
  if (g.max_new_tokens && *g.max_new_tokens <= 0)
    fail("{}: key 'max_new_tokens' must be positive, got {}", path, *g.max_new_tokens);
  return g;
}

void write_generation_config(const std::string& source, const nlohmann::json& config, const std::string& dir) {
  namespace fs = std::filesystem;
  const auto to = fs::path(dir) / "generation_config.json";
  if (!source.empty() && fs::is_directory(source) && fs::exists(fs::path(source) / "generation_config.json")) {
    fs::copy_file(fs::path(source) / "generation_config.json", to, fs::copy_options::overwrite_existing);
    return;
  }
  nlohmann::json gen = {{"bos_token_id", config.value("bos_token_id", nlohmann::json())},
                        {"eos_token_id", config.value("eos_token_id", nlohmann::json())}};
  write_text_atomically(to.string(), gen.dump(2) + "\n");
}

}  // namespace qtune::io
