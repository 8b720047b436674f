#pragma once
// A LoRA adapter as llama.cpp's GGUF adapter (convert_lora_to_gguf.py's layout), for `llama-cli --lora` and
// Ollama's ADAPTER: general.type "adapter", adapter.type "lora", adapter.lora.alpha; per adapted projection
// "<gguf weight>.lora_a" (A, [r, in]) and ".lora_b" (B, [out, r]), B's rows permuted like the base weight for
// attn_q/attn_k. llama.cpp scales every pair by alpha / r: when qtune's per-module scales are all alpha / r for one
// alpha (plain LoRA, or rsLoRA at one rank) that alpha is written; otherwise each module's scale is folded into its B
// and alpha is written as 0, which llama.cpp reads as scale 1.
#include <cstdint>
#include <string>

#include "qtune/nn/decoder.h"

namespace qtune::exporting {

struct GgufAdapterResult {
  int64_t modules = 0, tensors = 0;
  uint64_t bytes = 0;
  float alpha = 0;
  bool scale_folded = false;
};

// `type`: f32 | f16 | bf16 | q8_0 (convert_lora_to_gguf's --outtype). `path` must not exist; it appears complete or
// not at all.
GgufAdapterResult save_gguf_adapter(nn::CausalLMImpl& model, const std::string& path, const std::string& type,
                                    const std::string& name = "");

}  // namespace qtune::exporting
