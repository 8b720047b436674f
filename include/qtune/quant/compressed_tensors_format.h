#pragma once
// compressed-tensors' W8A8 checkpoint, as llm-compressor writes it (scheme "W8A8", format "int-quantized") and vLLM
// and SGLang load it. config.json:
//   quantization_config: {quant_method: "compressed-tensors", format: "int-quantized", quantization_status: "compressed",
//     config_groups: {group_0: {targets: ["Linear"],
//                               weights:           {num_bits: 8, type: "int", symmetric: true, strategy: "channel", dynamic: false},
//                               input_activations: {num_bits: 8, type: "int", symmetric: true, strategy: "token", dynamic: true}}},
//     ignore: ["lm_head"], sparsity_config: {}, transform_config: {}, kv_cache_scheme: null, version: ...}
// and for each quantized linear "<module>" (compressors/naive_quantized: a symmetric scheme stores no zero point):
//   <module>.weight        I8 [out, in]
//   <module>.weight_scale  F32 | BF16 | F16 [out, 1]     weight = code * scale
// Everything else (norms, embeddings, lm_head and the linears `ignore` names) is stored dense, as in any checkpoint.
// Targets and ignore entries match as compressed-tensors matches them (utils/match.py): "Linear" is every linear, "re:P"
// a module name that Python's re.match(P) accepts (anchored at the start only), anything else one module's full name.
// Only this scheme is read: group or block strategies, static or asymmetric activations, weight-only int8, other bit
// widths and the packed formats are refused, naming the key.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "qtune/io/safetensors.h"
#include "qtune/io/weight_source.h"
#include "qtune/quant/w8a8.h"

namespace qtune::quant {

struct CompressedTensorsConfig {
  std::vector<std::string> targets;  // over all config groups (each one W8A8)
  std::vector<std::string> ignore;

  // Whether the linear `module_name` is stored quantized (targeted and not ignored).
  bool quantizes(const std::string& module_name) const;
  // `where` names config.json in messages.
  static CompressedTensorsConfig from_json(const nlohmann::json& quantization_config, const std::string& where);
  // The quantization_config llm-compressor writes for W8A8 over every linear but `ignore`.
  static nlohmann::json w8a8_json(const std::vector<std::string>& ignore);
};

// compressed-tensors' target matching (see above) of one entry against a linear's full module name.
bool compressed_tensors_match(const std::string& target, const std::string& module_name);

// Whether `module_name` is stored as compressed-tensors int8 codes (its weight_scale exists).
bool has_compressed_w8a8(const io::WeightSource& source, const std::string& module_name);
// Reads and validates the codes and scales of a linear of [out, in]; `config_where` names the config.json that says
// the linear is quantized.
W8A8State read_compressed_w8a8(const io::WeightSource& source, const std::string& module_name, int64_t out_features,
                               int64_t in_features, const std::string& config_where);
// <module>.weight (int8) and <module>.weight_scale ([out, 1], fp32: the scales qtune computes with, unrounded).
void append_compressed_w8a8(io::NamedTensors& out, const std::string& module_name, const W8A8State& state);

}  // namespace qtune::quant
