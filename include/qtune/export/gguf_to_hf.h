#pragma once
// qtune convert: a llama-architecture GGUF as a Hugging Face model directory that transformers and PEFT load:
// config.json, generation_config.json, the weights dequantized (Q/K rows back in Hugging Face's order) in safetensors
// shards, and the tokenizer (tokenizer.json or tokenizer.model, tokenizer_config.json with the chat template).
// Tensors are dequantized one at a time and written shard by shard; `out_dir` appears complete or not at all.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace qtune::exporting {

struct GgufConversion {
  int64_t tensors = 0, shards = 0, bytes = 0;
};

GgufConversion convert_gguf_to_hf(const std::string& gguf_path, const std::string& out_dir, at::ScalarType dtype,
                                  int64_t max_shard_bytes = int64_t{2} << 30);

}  // namespace qtune::exporting
