// ModelConfig::load, apart from hf_config.cpp, which stays torch-free for its fuzzer: a GGUF's config needs the reader.
#include "qtune/io/hf_config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/io/gguf_model.h"
#include "qtune/util/error.h"

namespace qtune::io {

using json = nlohmann::json;

ModelConfig ModelConfig::load(const std::string& path_or_dir) {
  namespace fs = std::filesystem;
  // A GGUF file holds its config in its metadata; wherever a model directory goes, a .gguf goes too.
  if (is_gguf_path(path_or_dir)) return gguf_model_config(*GgufFile::open(path_or_dir));
  fs::path p(path_or_dir);
  if (fs::is_directory(p)) p /= "config.json";
  if (!fs::exists(p)) fail("{}: config.json not found (expected a Hugging Face model directory)", p.string());
  std::ifstream in(p);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", p.string(), e.what());
  }
  return from_json(j, p.string());
}

}  // namespace qtune::io
