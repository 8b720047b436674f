#include "qtune/nn/model_io.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <functional>

#include "qtune/io/atomic_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/util/error.h"

namespace qtune::nn {

CausalLM load_causal_lm(const std::string& dir, at::TensorOptions options, LinearFactory* factory) {
  auto config = io::ModelConfig::load(dir);
  auto checkpoint = io::ShardedCheckpoint::open(dir);
  DenseLinearFactory dense(options);
  return std::make_shared<CausalLMImpl>(config, factory ? *factory : dense, *checkpoint, options);
}

bool RandomInit::has(const std::string& name) const {
  return name != "lm_head.weight" || !config_.tie_word_embeddings;
}

at::Tensor RandomInit::get(const std::string& name, at::IntArrayRef shape) const {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with("norm.weight")) return at::ones(shape, at::kFloat);
  if (ends_with(".bias")) return at::zeros(shape, at::kFloat);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed_ ^ std::hash<std::string>{}(name));
  return at::normal(0.0, config_.initializer_range, shape, gen, at::TensorOptions().dtype(at::kFloat));
}

void save_pretrained(CausalLMImpl& model, const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  io::NamedTensors tensors;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) tensors.emplace_back(item.key(), item.value());
  io::write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  auto config = model.config().to_json();
  const auto type = model.options().dtype().toScalarType();
  config["torch_dtype"] = type == at::kBFloat16 ? "bfloat16" : type == at::kHalf ? "float16" : "float32";
  io::write_text_atomically((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
  nlohmann::json gen = {{"bos_token_id", config["bos_token_id"]}, {"eos_token_id", config["eos_token_id"]}};
  io::write_text_atomically((fs::path(dir) / "generation_config.json").string(), gen.dump(2) + "\n");
}

}  // namespace qtune::nn
