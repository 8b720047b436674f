#pragma once
// Benchmark models of a given shape with random weights, made directly in their stored format: 4-bit codes are drawn
// on the device as bytes (with absmaxes of a 0.02-std weight), so a 7B shape is ready in seconds and never exists in
// 16 bits. Dequantization and the matmuls cost the same whatever the codes are; the values only need to keep the
// activations finite.
#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "qtune/io/hf_config.h"
#include "qtune/lora/lora_config.h"
#include "qtune/nn/decoder.h"
#include "qtune/nn/linear.h"

namespace qtune::cli {

struct RandomModel {
  std::unique_ptr<nn::LinearFactory> base, lora;  // kept alive with the model
  nn::CausalLM model;
};

// base: "nf4" (NF4 + double quant, block 64, as QLoRA stores it), "int8", "w8a8" or "dense" (the compute dtype). With `lora`,
// every target projection gets an adapter (fp32, on the model's device).
RandomModel random_model(const io::ModelConfig& config, const std::string& base, at::TensorOptions options,
                         const lora::LoraConfig* lora, uint64_t seed);

// A real model (a Hugging Face directory or a .gguf), loaded as `qtune train` loads it: base "nf4" (+ double quant,
// block 64), "int8", "w8a8" or "dense" quantized tensor by tensor (a GPTQ / AWQ / bitsandbytes checkpoint stays as stored).
RandomModel loaded_model(const std::string& path, const std::string& base, at::TensorOptions options,
                         const lora::LoraConfig* lora, uint64_t seed);

}  // namespace qtune::cli
