#pragma once
// qtune's own mixed checkpoint: a plan (`qtune quantize --method auto`) whose linears use methods no single
// checkpoint format holds together. Each linear keeps its own store's tensors, under the names that store uses:
//   nf4    <module>.weight + bitsandbytes' 4-bit state      int8   <module>.weight (int8) + <module>.SCB
//   gptq   <module>.qweight/qzeros/scales/g_idx             16bit  <module>.weight (fp16 / bf16)
//   awq    GPTQ's four tensors of Q(W·s) + <module>.awq_input_scale (F32 [in], s; the weight is Q(W·s)·diag(1/s))
// and config.json's quantization_config says which is which:
//   {"quant_method": "qtune", "linears": {"model.layers.0.self_attn.q_proj": "gptq", ...},
//    "gptq": {"bits": 4, "group_size": 128, "sym": true, "checkpoint_format": "gptq_v2"}, "awq": {...},
//    "loadable_by": ["qtune"], "why": "..."}
// ("gptq" and "awq" as GPTQ's quantization_config states a grid and its zero-point layout.)
#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qtune/io/weight_source.h"
#include "qtune/quant/gptq_format.h"

namespace qtune::quant {

inline constexpr const char* kAwqInputScale = ".awq_input_scale";

struct QtuneMixedConfig {
  std::map<std::string, std::string> linears;  // module → nf4 | int8 | gptq | awq | 16bit
  std::optional<GptqConfig> gptq, awq;         // present when some linear uses them
  std::vector<std::string> loadable_by;
  std::string why;

  // The method of `module`; refuses one the map does not name (`where`: the config.json).
  const std::string& method_of(const std::string& module, const std::string& where) const;
  static QtuneMixedConfig from_json(const nlohmann::json& quantization_config, const std::string& where);
  nlohmann::json to_json() const;
};

// What a linear's tensors say it is stored in (nf4, fp4, int8, gptq, awq, 16bit; "" when nothing of it is stored)
// and the tensor that says so (for messages).
struct StoredLinear {
  std::string method, tensor;
};
StoredLinear stored_linear(const io::WeightSource& source, const std::string& module_name);

}  // namespace qtune::quant
