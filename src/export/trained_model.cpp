#include "qtune/export/trained_model.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "qtune/export/peft_adapter.h"
#include "qtune/io/hf_config.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/train/checkpoint.h"
#include "qtune/train/run_setup.h"
#include "qtune/io/gguf.h"
#include "qtune/util/error.h"

namespace qtune::exporting {

TrainedModel load_trained_model(const std::string& path, const std::string& base_dir, at::TensorOptions options,
                                const std::function<void(const std::string&)>& warn, const FactoryWrap& wrap) {
  TrainedModel t;
  t.checkpoint = train::resolve_checkpoint(path, warn);
  auto contents = train::load_checkpoint(t.checkpoint);
  t.recipe = train::Recipe::parse(contents.recipe_yaml, t.checkpoint + "/recipe.yaml");
  t.base_dir = base_dir.empty() ? t.recipe.model.path : base_dir;
  if (!io::is_gguf_path(t.base_dir) && !std::filesystem::exists(t.base_dir + "/config.json"))
    fail("the base model of {} is not at '{}' (no config.json): pass --base DIR", t.checkpoint, t.base_dir);
  const auto config = io::ModelConfig::load(t.base_dir);
  if (t.recipe.train.mode == "full") {
    t.base_factory = std::make_unique<nn::DenseLinearFactory>(options);
    if (wrap) t.outer_factory = wrap(*t.base_factory);
    t.model = nn::load_causal_lm(t.base_dir, options, wrap ? t.outer_factory.get() : t.base_factory.get());
  } else {
    t.base_factory = std::make_unique<nn::QuantLinearFactory>(
        train::quant_plan_of(t.recipe), options,
        quant::StoredQuantization::of(config.quantization_config, t.base_dir + "/config.json"));
    const auto lora_config = read_peft_config(t.checkpoint);
    t.lora_factory = std::make_unique<lora::LoraLinearFactory>(*t.base_factory, lora_config, 0);
    if (wrap) t.outer_factory = wrap(*t.lora_factory);
    t.model = nn::load_causal_lm(t.base_dir, options, wrap ? t.outer_factory.get() : t.lora_factory.get());
    lora::apply_modules_to_save(*t.model, lora_config.modules_to_save);
  }
  // Every trained tensor from the checkpoint, by parameter name; a base that does not fit says so.
  std::map<std::string, at::Tensor> params;
  for (auto& p : t.model->named_parameters()) params[p.key()] = p.value();
  torch::NoGradGuard no_grad;
  for (const auto& [name, saved] : contents.trainable) {
    auto it = params.find(name);
    if (it == params.end())
      fail("{}: '{}' has no place in the model at {} (another architecture?)", t.checkpoint, name, t.base_dir);
    if (it->second.sizes() != saved.sizes())
      fail("{}: '{}' does not fit the model at {} (shape differs: another model size or rank?)", t.checkpoint, name,
           t.base_dir);
    it->second.copy_(saved);
  }
  t.model->eval();
  return t;
}

}  // namespace qtune::exporting
