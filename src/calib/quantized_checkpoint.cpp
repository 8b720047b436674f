#include "qtune/calib/quantized_checkpoint.h"

#include <filesystem>

#include "qtune/data/tokenizer.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/generation_config.h"
#include "qtune/util/error.h"
#include "qtune/util/remove_tree.h"

namespace qtune::calib {
namespace fs = std::filesystem;

void write_directory_atomically(const std::string& out_dir, const std::function<void(const std::string&)>& write) {
  if (fs::exists(out_dir)) fail("--out {}: exists; choose a new directory (nothing was overwritten)", out_dir);
  const auto tmp = out_dir + ".tmp";
  remove_tree(tmp);
  fs::create_directories(tmp);
  try {
    write(tmp);
    fs::rename(tmp, out_dir);
  } catch (...) {
    remove_tree(tmp);  // nothing half-written is left behind
    throw;
  }
}

int64_t finish_with_head(io::ShardedWriter& writer, const io::WeightSource& weights, const io::ModelConfig& config,
                         at::ScalarType dtype) {
  writer.add("model.norm.weight", weights.get("model.norm.weight", {config.hidden_size}).to(dtype));
  if (!config.tie_word_embeddings)
    writer.add("lm_head.weight", weights.get("lm_head.weight", {config.vocab_size, config.hidden_size}).to(dtype));
  return writer.finish().bytes;
}

void write_model_files(const std::string& model_dir, const io::ModelConfig& config,
                       const nlohmann::json& quantization_config, at::ScalarType dtype, const std::string& dir) {
  auto cfg = config.to_json();
  cfg["torch_dtype"] = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  if (!quantization_config.is_null()) cfg["quantization_config"] = quantization_config;
  io::write_text_atomically((fs::path(dir) / "config.json").string(), cfg.dump(2) + "\n");
  io::write_generation_config(model_dir, cfg, dir);
  data::copy_tokenizer_files(model_dir, dir);
}

}  // namespace qtune::calib
