#pragma once
// A merged model as one GGUF file for llama.cpp / Ollama / LM Studio: the family's llama.cpp architecture and its
// metadata as convert_hf_to_gguf.py writes them, the tokenizer metadata (export/gguf_vocab.h), and every tensor
// merged with its adapter in fp32 (export/merged_tensors.h) and stored as the converter stores it (io/gguf_layout.h:
// Q/K rows interleaved for Llama, Gemma's norms + 1), then quantized to the type llama-quantize's mix gives it
// (export/gguf_type_mix.h; with an importance matrix when one is given, as llama-quantize --imatrix). The header is
// written first and the tensors stream after it one at a time; the file appears complete or not at all.
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>

#include "qtune/io/gguf_writer.h"
#include "qtune/nn/decoder.h"

namespace qtune::exporting {

struct GgufExportOptions {
  std::string type = "q8_0";  // gguf_file_type_names()
  std::string name;           // general.name
  // Hugging Face weight name ("model.layers.0.mlp.down_proj.weight") → mean squared input per column, [in].
  std::map<std::string, at::Tensor> importance;
};

struct GgufExportResult {
  int64_t tensors = 0;
  uint64_t bytes = 0;
  std::map<std::string, int64_t> tensors_by_type;  // "Q4_K" → count
  double weight_bits = 0;                          // bits per value over the 2-D weights
};

GgufExportResult save_gguf_model(nn::CausalLMImpl& model, const io::GgufMetadata& vocab, const std::string& path,
                                 const GgufExportOptions& options);

// The metadata of `config`'s llama.cpp architecture (general.*, ARCH.*), without the tokenizer; what llama.cpp
// cannot state for the model (a sliding Qwen2, another Gemma score scale) is an error naming the key.
io::GgufMetadata gguf_model_metadata(const io::ModelConfig& config, const std::string& name, uint32_t file_type);

}  // namespace qtune::exporting
