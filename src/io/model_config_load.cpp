// ModelConfig::load, apart from hf_config.cpp, which stays torch-free for its fuzzer: a GGUF's config needs the reader.
#include "qtune/io/hf_config.h"

#include <filesystem>

#include "qtune/io/gguf_model.h"
#include "qtune/io/json_file.h"
#include "qtune/util/error.h"

namespace qtune::io {

ModelConfig ModelConfig::load(const std::string& path_or_dir) {
  namespace fs = std::filesystem;
  // A GGUF file holds its config in its metadata; wherever a model directory goes, a .gguf goes too.
  if (is_gguf_path(path_or_dir)) return gguf_model_config(*GgufFile::open(path_or_dir));
  fs::path p(path_or_dir);
  if (fs::is_directory(p)) p /= "config.json";
  if (!fs::exists(p)) fail("{}: config.json not found (expected a Hugging Face model directory)", p.string());
  return from_json(read_json_file(p.string()), p.string());
}

}  // namespace qtune::io
