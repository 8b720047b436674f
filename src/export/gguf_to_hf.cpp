#include "qtune/export/gguf_to_hf.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "qtune/data/gguf_tokenizer.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/gguf_model.h"
#include "qtune/io/sharded_writer.h"
#include "qtune/util/error.h"
#include "qtune/util/remove_tree.h"

namespace qtune::exporting {

namespace fs = std::filesystem;

GgufConversion convert_gguf_to_hf(const std::string& gguf_path, const std::string& out_dir, at::ScalarType dtype,
                                  int64_t max_shard_bytes) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) fail("convert: dtype must be fp32, bf16 or fp16");
  if (fs::exists(out_dir)) fail("convert: '{}' exists; choose a new directory (nothing was overwritten)", out_dir);
  const auto file = io::GgufFile::open(gguf_path);
  auto config = io::gguf_config_json(*file);
  io::ModelConfig::from_json(config, gguf_path);  // validates before anything is written
  const auto tokenizer = data::gguf_tokenizer(*file);
  const io::GgufWeights weights(file);

  const auto tmp = out_dir + ".tmp";
  remove_tree(tmp);
  fs::create_directories(tmp);
  io::ShardedWriter writer(tmp, max_shard_bytes);
  for (const auto& t : file->header().tensors) {
    const auto name = weights.layout().hf_name(t.name);
    if (name.empty())
      fail("{}: tensor '{}' has no place in a Hugging Face {} checkpoint", gguf_path, t.name,
           config["model_type"].get<std::string>());
    writer.add(name, weights.get(name, {}).to(dtype));
    weights.release(name);
  }
  const auto written = writer.finish();

  // Stated even when the file names none: a config class's own default (Phi3Config's pad 32000) may lie outside the
  // vocabulary, and transformers then refuses the model.
  for (const char* key : {"bos_token_id", "pad_token_id"})
    if (!config.contains(key)) config[key] = nullptr;
  config["torch_dtype"] = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  io::write_text_atomically((fs::path(tmp) / "config.json").string(), config.dump(2) + "\n");
  nlohmann::json gen = nlohmann::json::object();
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"})
    if (config.contains(key)) gen[key] = config[key];
  io::write_text_atomically((fs::path(tmp) / "generation_config.json").string(), gen.dump(2) + "\n");
  data::save_tokenizer_files(tokenizer, tmp);
  fs::rename(tmp, out_dir);
  return {written.tensors, written.shards, written.bytes};
}

}  // namespace qtune::exporting
