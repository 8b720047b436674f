#pragma once
// Folding adapters into their base weights: in place for evaluation (reversibly), and as an HF-named fp32 state
// dict for exporting a merged model.
#include <torch/nn/module.h>

#include "qtune/io/safetensors.h"
#include "qtune/lora/lora_linear.h"
#include "qtune/nn/decoder.h"
#include "qtune/quant/nf4.h"

namespace qtune::lora {

// merge() / unmerge() on every LoraLinear under `module` (see LoraLinearImpl).
void merge_all(torch::nn::Module& module);
void unmerge_all(torch::nn::Module& module);

// Every weight of the model under its Hugging Face name ("model.layers.0.self_attn.q_proj.weight"), dense fp32:
// projections as W + scale·B·A (dequantized when the base is quantized), the rest as stored, modules_to_save as
// trained. A tied model has no "lm_head.weight". Tensors may share storage with fp32 parameters of the model.
io::NamedTensors merged_state_dict(nn::CausalLMImpl& model);

// W + scale·B·A computed in fp32 from the dequantized base, then quantized again: never an update added onto the
// 4-bit codes (which rounds small updates away). The caller decides whether the rounding cost is acceptable.
quant::Quant4State merged_4bit(const LoraLinearImpl& layer, const quant::Quantize4Options& options);

}  // namespace qtune::lora
