#pragma once
// PEFT's disable_adapter(): every LoRA adapter of a model switched off for a scope, so that the same model computes
// its frozen base alone. On a frozen (quantized) base that base is the reference policy that DPO and KTO compare
// with: no second model is loaded. The model code knows nothing of it; the switch finds the LoRA layers itself.
#include <torch/nn/module.h>

#include <vector>

#include "qtune/lora/lora_linear.h"

namespace qtune::lora {

class AdaptersDisabled {
 public:
  explicit AdaptersDisabled(torch::nn::Module& model);
  ~AdaptersDisabled();  // each layer back as it was
  AdaptersDisabled(const AdaptersDisabled&) = delete;
  AdaptersDisabled& operator=(const AdaptersDisabled&) = delete;

  size_t layers() const { return layers_.size(); }  // LoRA layers switched off (0: the model has none)

 private:
  std::vector<std::pair<LoraLinear, bool>> layers_;  // and whether each was on before
};

}  // namespace qtune::lora
