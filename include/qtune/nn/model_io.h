#pragma once
// Building a CausalLM from a Hugging Face directory, from fresh initialisation, and saving one back.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "qtune/io/hf_config.h"
#include "qtune/io/weight_source.h"
#include "qtune/nn/decoder.h"

namespace qtune::nn {

// Loads config.json and the safetensors weights of `dir`. Each tensor goes from the memory map straight
// to its module (through `factory`, dense by default), so the 16-bit model is never held twice.
CausalLM load_causal_lm(const std::string& dir, at::TensorOptions options, LinearFactory* factory = nullptr);

// Transformers' initialisation: normal(0, initializer_range) for matrices, ones for norms, zeros for
// biases. Each tensor is drawn from a generator seeded by (seed, name), so it does not depend on order.
class RandomInit : public io::WeightSource {
 public:
  RandomInit(io::ModelConfig config, uint64_t seed) : config_(std::move(config)), seed_(seed) {}
  bool has(const std::string& name) const override;
  at::Tensor get(const std::string& name, at::IntArrayRef shape) const override;

 private:
  io::ModelConfig config_;
  uint64_t seed_;
};

// Writes config.json, generation_config.json and model.safetensors to `dir`: dense weights in the model's dtype,
// quantized linears in bitsandbytes' layout with the matching quantization_config (quant/bnb_format.h).
// generation_config.json is `source`'s (the model directory the weights came from) when it has one.
void save_pretrained(CausalLMImpl& model, const std::string& dir, const std::string& source = {});

}  // namespace qtune::nn
