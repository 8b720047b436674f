#include "qtune/lora/inject.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <functional>

#include "qtune/nn/embedding.h"
#include "qtune/util/error.h"

namespace qtune::lora {

LoraLinearFactory::LoraLinearFactory(nn::LinearFactory& base, LoraConfig config, uint64_t seed, qat::QatPlan qat)
    : base_(base), config_(std::move(config)), seed_(seed), qat_(std::move(qat)) {
  config_.validate();
}

at::Generator adapter_generator(uint64_t seed, const std::string& module_name) {
  // The same (seed, name) mixing as nn::RandomInit, keyed by the parameter's name.
  return at::make_generator<at::CPUGeneratorImpl>(seed ^ std::hash<std::string>{}(module_name + ".lora_A.weight"));
}

nn::Linear LoraLinearFactory::make(const nn::LinearSpec& spec, const io::WeightSource& weights) {
  auto linear = base_.make(spec, weights);
  built_.push_back(spec.name);
  const auto target = config_.resolve(spec.name);
  if (!target) return linear;
  wrapped_.push_back(spec.name);
  return std::make_shared<LoraLinearImpl>(std::move(linear), *target, config_.dropout,
                                          adapter_generator(seed_, spec.name),
                                          qat_ ? qat_(spec.name) : qat::QatOptions{});
}

std::vector<std::string> LoraLinearFactory::unmatched_targets() const {
  std::vector<std::string> out;
  for (const auto& t : config_.target_modules) {
    if (t == "all-linear") continue;
    const bool hit = std::any_of(built_.begin(), built_.end(), [&](const std::string& name) {
      return name == t || (name.size() > t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0 &&
                           name[name.size() - t.size() - 1] == '.');
    });
    if (!hit) out.push_back(t);
  }
  return out;
}

std::vector<std::string> LoraLinearFactory::built_leaf_names() const {
  std::vector<std::string> out;
  for (const auto& name : built_) {
    const auto leaf = name.substr(name.rfind('.') + 1);
    if (std::find(out.begin(), out.end(), leaf) == out.end()) out.push_back(leaf);
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> trainable_parameters(torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<std::pair<std::string, LoraLinear>> lora_layers(torch::nn::Module& module) {
  std::vector<std::pair<std::string, LoraLinear>> out;
  for (const auto& item : module.named_modules("", /*include_self=*/true))
    if (auto lora = std::dynamic_pointer_cast<LoraLinearImpl>(item.value())) out.emplace_back(item.key(), lora);
  return out;
}

namespace {

// A trainable fp32 copy, sharing nothing with `w` (PEFT deep-copies the module).
at::Tensor trainable_copy(const at::Tensor& w) {
  torch::NoGradGuard no_grad;
  return w.detach().to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).set_requires_grad(true);
}

}  // namespace

void apply_modules_to_save(nn::CausalLMImpl& model, const std::vector<std::string>& modules) {
  for (const auto& name : modules)
    if (name != "lm_head" && name != "embed_tokens" && name != "model.embed_tokens")
      fail("modules_to_save: cannot train module '{}' in full (only 'lm_head' and 'embed_tokens')", name);
  auto wants = [&](std::initializer_list<const char*> names) {
    return std::any_of(names.begin(), names.end(),
                       [&](const char* n) { return std::find(modules.begin(), modules.end(), n) != modules.end(); });
  };
  const bool head = wants({"lm_head"}), embed = wants({"embed_tokens", "model.embed_tokens"});
  auto& trunk = model.trunk();
  const bool tied = model.lm_head_weight().is_same(trunk.embed_tokens->weight());
  // lm_head first: on a tied model it must copy (or, untrained, keep) the weight before the embeddings change.
  if (head)
    model.set_lm_head_weight(trainable_copy(model.lm_head_weight()));
  else if (embed && tied)
    model.set_lm_head_weight(trunk.embed_tokens->weight());  // stays frozen, in the model dtype
  if (embed) {
    auto emb = std::make_shared<nn::EmbeddingImpl>(trainable_copy(trunk.embed_tokens->weight()));
    emb->weight().set_requires_grad(true);  // EmbeddingImpl registers its weight frozen
    trunk.embed_tokens = trunk.replace_module("embed_tokens", emb);
  }
}

}  // namespace qtune::lora
