#include "qtune/lora/merge.h"

#include <torch/csrc/autograd/grad_mode.h>

#include "qtune/lora/inject.h"
#include "qtune/lora/lora_linear.h"

namespace qtune::lora {

void merge_all(torch::nn::Module& module) {
  for (auto& [name, layer] : lora_layers(module)) layer->merge();
}

void unmerge_all(torch::nn::Module& module) {
  for (auto& [name, layer] : lora_layers(module)) layer->unmerge();
}

namespace {

// A projection is exported as one dense weight (and bias) whatever it holds inside (base_layer, lora_A, codes);
// any other module as its own parameters.
void collect(torch::nn::Module& module, const std::string& path, io::NamedTensors& out) {
  const std::string prefix = path.empty() ? "" : path + ".";
  if (auto* linear = dynamic_cast<nn::LinearImpl*>(&module)) {
    auto* lora = dynamic_cast<LoraLinearImpl*>(linear);
    out.emplace_back(prefix + "weight", (lora ? lora->merged_weight() : linear->dense_weight()).contiguous());
    if (auto b = linear->bias(); b.defined()) out.emplace_back(prefix + "bias", b.detach().to(at::kFloat));
    return;
  }
  for (const auto& p : module.named_parameters(/*recurse=*/false))
    out.emplace_back(prefix + p.key(), p.value().detach().to(at::kFloat));
  for (const auto& child : module.named_children()) collect(*child.value(), prefix + child.key(), out);
}

}  // namespace

quant::Quant4State merged_4bit(const LoraLinearImpl& layer, const quant::Quantize4Options& options) {
  torch::NoGradGuard no_grad;
  return quant::quantize_4bit(layer.merged_weight(), options);
}

io::NamedTensors merged_state_dict(nn::CausalLMImpl& model) {
  torch::NoGradGuard no_grad;
  io::NamedTensors out;
  collect(model, "", out);
  return out;
}

}  // namespace qtune::lora
