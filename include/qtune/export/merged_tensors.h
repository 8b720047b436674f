#pragma once
// The tensors of a merged model, listed in module order under Hugging Face names before any is computed: each
// carries its shape and a function that produces its fp32 value on demand (an adapted projection: dequantize(W) +
// scale·B·A). Exporters declare every tensor first (a GGUF header, shard plans) and then compute one at a time,
// so the merged model is never held in memory as a whole.
#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "qtune/nn/decoder.h"

namespace qtune::exporting {

struct MergedTensor {
  std::string name;            // "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;
  bool projection_weight = false;  // the weight of a linear built by the factory (what quantized formats apply to)
  std::function<at::Tensor()> value;  // fp32, CPU or the model's device, no gradient
};

std::vector<MergedTensor> merged_tensors(nn::CausalLMImpl& model);

}  // namespace qtune::exporting
