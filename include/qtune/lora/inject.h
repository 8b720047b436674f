#pragma once
// Putting adapters into a model: a LinearFactory that wraps the projections the LoraConfig targets around
// whatever the base factory builds (dense, 4-bit, 8-bit), plus PEFT's modules_to_save and "which parameters train".
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qtune/lora/lora_config.h"
#include "qtune/lora/lora_linear.h"
#include "qtune/nn/decoder.h"
#include "qtune/nn/linear.h"

namespace qtune::lora {

class LoraLinearFactory : public nn::LinearFactory {
 public:
  // Validates `config`. `base` must outlive this factory. `qat`: what quantization-aware training simulates in each
  // adapter (empty: nothing).
  LoraLinearFactory(nn::LinearFactory& base, LoraConfig config, uint64_t seed, qat::QatPlan qat = {});
  // The base factory's linear, wrapped in a LoraLinear when the config targets spec.name. Each A is drawn from a
  // generator seeded by (seed, module name), so adapters do not depend on the order modules are built in.
  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& weights) override;
  const LoraConfig& config() const { return config_; }
  const std::vector<std::string>& wrapped() const { return wrapped_; }  // module names wrapped, in build order
  // The target_modules entries that named none of the linears built so far (a Llama name on a Phi-3 model: "q_proj"
  // where it has qkv_proj), and the leaf names of those linears, for the error that says so.
  std::vector<std::string> unmatched_targets() const;
  std::vector<std::string> built_leaf_names() const;

 private:
  nn::LinearFactory& base_;
  LoraConfig config_;
  uint64_t seed_;
  qat::QatPlan qat_;
  std::vector<std::string> wrapped_;
  std::vector<std::string> built_;  // every linear's name, wrapped or not
};

// The generator an adapter's A is drawn from.
at::Generator adapter_generator(uint64_t seed, const std::string& module_name);

// Named parameters that require grad (what the optimizer steps): lora_A/lora_B, and modules_to_save.
std::vector<std::pair<std::string, at::Tensor>> trainable_parameters(torch::nn::Module& module);

// Every LoraLinear under `module`, with its path ("model.layers.0.self_attn.q_proj").
std::vector<std::pair<std::string, LoraLinear>> lora_layers(torch::nn::Module& module);

// PEFT's modules_to_save: "lm_head" and/or "embed_tokens" (also "model.embed_tokens") get a trainable fp32 copy of
// their weight. The copies are new tensors, so a tied model comes apart as it does in PEFT: training lm_head leaves the
// embeddings alone and training embed_tokens leaves the (frozen) lm_head alone. Any other name is an error.
void apply_modules_to_save(nn::CausalLMImpl& model, const std::vector<std::string>& modules);

}  // namespace qtune::lora
