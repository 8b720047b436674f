#pragma once
// The adapter in PEFT's on-disk format, so `PeftModel.from_pretrained(base, dir)` loads what qtune trained and qtune
// starts from what PEFT trained: adapter_model.safetensors with PEFT's key names ("base_model.model.<module>.lora_A.weight",
// modules_to_save as "base_model.model.<module>.weight") and adapter_config.json.
#include <string>

#include "qtune/lora/lora_config.h"
#include "qtune/nn/decoder.h"

namespace qtune::exporting {

// Writes dir/adapter_model.safetensors and dir/adapter_config.json (each atomically). Tensors are fp32 as trained.
void save_peft_adapter(nn::CausalLMImpl& model, const lora::LoraConfig& config, const std::string& base_model,
                       const std::string& dir);

// The LoraConfig of a PEFT adapter directory (r, lora_alpha, lora_dropout, target_modules, use_rslora, rank_pattern,
// alpha_pattern, modules_to_save). Errors name the file and the key.
lora::LoraConfig read_peft_config(const std::string& dir);

// Copies the adapter's tensors into a model built with the same LoraConfig. Every adapter tensor must find its
// parameter with the same shape, and every trainable parameter must be in the file: errors name the first mismatch.
void load_peft_adapter(nn::CausalLMImpl& model, const std::string& dir);

}  // namespace qtune::exporting
