#pragma once
// The model a training run produced, rebuilt from a checkpoint: the base as the run quantized it (its saved recipe's
// plan), the adapters (or, for a full run, every weight) from the checkpoint. Export and evaluation start here.
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>

#include "qtune/lora/inject.h"
#include "qtune/nn/decoder.h"
#include "qtune/train/recipe.h"

namespace qtune::exporting {

struct TrainedModel {
  std::string checkpoint;  // the verified checkpoint directory it came from
  train::Recipe recipe;    // as saved in the checkpoint (not re-validated: its data may have moved)
  std::string base_dir;    // the base model directory used
  std::unique_ptr<nn::LinearFactory> base_factory;
  std::unique_ptr<lora::LoraLinearFactory> lora_factory;
  std::unique_ptr<nn::LinearFactory> outer_factory;  // the `wrap` factory, when one was given
  nn::CausalLM model;  // in eval mode
};

// `path`: a checkpoint, or a run directory (its newest valid checkpoint). `base_dir`: the base model, when it moved
// since training ("" = the recipe's model.path). Warnings (skipped corrupt checkpoints) go to `warn`.
// `wrap` (optional) builds the factory the model is built with around the run's own one (e.g. calib/importance.h's
// collector, which observes every linear); it must keep parameter names.
using FactoryWrap = std::function<std::unique_ptr<nn::LinearFactory>(nn::LinearFactory& run_factory)>;
TrainedModel load_trained_model(const std::string& path, const std::string& base_dir, at::TensorOptions options,
                                const std::function<void(const std::string&)>& warn, const FactoryWrap& wrap = {});

}  // namespace qtune::exporting
