#include "qtune/export/merged_tensors.h"

#include <torch/csrc/autograd/grad_mode.h>

#include "qtune/lora/lora_linear.h"

namespace qtune::exporting {
namespace {

void visit(torch::nn::Module& module, const std::string& path, std::vector<MergedTensor>& out) {
  const std::string prefix = path.empty() ? "" : path + ".";
  if (auto* linear = dynamic_cast<nn::LinearImpl*>(&module)) {
    const auto& spec = linear->spec();
    out.push_back({prefix + "weight", {spec.out_features, spec.in_features}, true, [linear] {
                     torch::NoGradGuard no_grad;
                     auto* lora = dynamic_cast<lora::LoraLinearImpl*>(linear);
                     return lora ? lora->merged_weight() : linear->dense_weight().to(at::kFloat);
                   }});
    if (spec.bias)
      out.push_back({prefix + "bias", {spec.out_features}, false,
                     [linear] { return linear->bias().detach().to(at::kFloat); }});
    return;
  }
  for (const auto& p : module.named_parameters(/*recurse=*/false)) {
    at::Tensor t = p.value();
    out.push_back({prefix + p.key(), t.sizes().vec(), false, [t] { return t.detach().to(at::kFloat); }});
  }
  for (const auto& child : module.named_children()) visit(*child.value(), prefix + child.key(), out);
}

}  // namespace

std::vector<MergedTensor> merged_tensors(nn::CausalLMImpl& model) {
  std::vector<MergedTensor> out;
  visit(model, "", out);
  return out;
}

}  // namespace qtune::exporting
