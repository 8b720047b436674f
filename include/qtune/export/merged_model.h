#pragma once
// A merged model as an ordinary Hugging Face directory: every adapted projection written as dequantize(W) + scale·B·A
// computed in fp32 (never added onto the 4-bit codes, which would round small updates away), then cast to the chosen
// dtype, or quantized again: to NF4/FP4 in bitsandbytes' layout, to an integer grid per group as a Hugging Face GPTQ
// checkpoint (transformers, gptqmodel and vLLM load it), or to W8A8 as a compressed-tensors checkpoint (vLLM, SGLang),
// each with the matching quantization_config. Tensors are produced
// one at a time and written shard by shard, so the merged model is never held in memory as a whole.
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

#include "qtune/nn/decoder.h"
#include "qtune/quant/fake_quant.h"
#include "qtune/quant/quant_plan.h"

namespace qtune::exporting {

struct MergedExportOptions {
  at::ScalarType dtype = at::kFloat;  // fp32 | bf16 | fp16 (also the compute dtype named in a 4-bit config)
  // Projections back to NF4 or FP4 (format, block, double quant); nullopt: every tensor in `dtype`.
  std::optional<quant::LayerQuant> quantize4;
  // Projections to int2/int4/int8 codes as this integer spec deploys them (quant::int_codes: the codes and fp16 scales
  // a QAT run's forward used), written as a GPTQ checkpoint (no act-order; zero points as quant::default_checkpoint_format); excludes quantize4.
  std::optional<quant::FakeQuantSpec> quantize_int;
  // Projections to W8A8 (int8 per output channel, round-to-nearest; inputs quantized per token at run time), written
  // as compressed-tensors' checkpoint (export/compressed_tensors.h); excludes the two above.
  bool quantize_w8a8 = false;
  int64_t max_shard_bytes = int64_t{2} << 30;
  // The base model's directory (or .gguf): its generation_config.json (stop ids, sampling defaults) is copied.
  std::string source;
};

struct MergedExportResult {
  int64_t shards = 0, tensors = 0, bytes = 0;
};

// Writes config.json (without quantization_config unless the projections are quantized), generation_config.json and the weights
// (model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json). `dir` appears complete or
// not at all: everything is written into a temporary sibling that is renamed at the end. `dir` must not exist.
MergedExportResult save_merged_model(nn::CausalLMImpl& model, const std::string& dir, const MergedExportOptions& options);

}  // namespace qtune::exporting
