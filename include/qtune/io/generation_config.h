#pragma once
// A Hugging Face `generation_config.json`: the stop ids and sampling defaults the model's authors ship
// (transformers' GenerationConfig). Its eos_token_id list is what generation stops at; do_sample / temperature /
// top_p / top_k are the defaults when the command line gives none.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qtune::io {

struct GenerationConfig {
  std::vector<int64_t> eos_token_ids;  // empty when the file names none
  bool do_sample = false;
  std::optional<double> temperature, top_p;
  std::optional<int64_t> top_k, max_new_tokens;

  // The directory's generation_config.json; nullopt when there is none. Wrong types or values are errors naming
  // the file and the key.
  static std::optional<GenerationConfig> load(const std::string& model_dir);
};

// Writes `dir`/generation_config.json for a model written from `source` (a model directory, a .gguf, or "" for none):
// the source directory's own file, copied unchanged (its stop ids and sampling defaults are the authors', and a
// rewrite would drop what qtune does not read), else {bos_token_id, eos_token_id} from `config` (config.json's keys).
void write_generation_config(const std::string& source, const nlohmann::json& config, const std::string& dir);

}  // namespace qtune::io
