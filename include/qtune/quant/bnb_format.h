#pragma once
// 4-bit and 8-bit weights in the safetensors layout that transformers + bitsandbytes write and read, so a
// checkpoint quantized by either side loads in the other. For a weight "<module>.weight":
//   4-bit (bitsandbytes/functional.py, QuantState.as_dict(packed=True) / from_dict; nn/modules.py Params4bit):
//     <w>                                    U8  [ceil(n/2), 1]  packed codes
//     <w>.absmax                             F32 [blocks], or U8 [blocks] with double quantization
//     <w>.quant_map                          F32 [16]
//     <w>.nested_absmax, <w>.nested_quant_map F32, with double quantization
//     <w>.quant_state.bitsandbytes__nf4|fp4  U8  JSON {quant_type, blocksize, dtype, shape, nested_blocksize,
//                                                     nested_dtype, nested_offset}
//   8-bit (nn/modules.py Linear8bitLt._save_to_state_dict): <module>.weight I8 [out, in], <module>.SCB F32 [out].
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "qtune/io/safetensors.h"
#include "qtune/io/weight_source.h"
#include "qtune/quant/int8.h"
#include "qtune/quant/quant_plan.h"
#include "qtune/quant/quant_state.h"

namespace qtune::quant {

// "" when `weight_name` has no 4-bit state in `source`, else its quant_state key.
std::string bnb_4bit_state_key(const io::WeightSource& source, const std::string& weight_name);
Quant4State read_bnb_4bit(const io::WeightSource& source, const std::string& weight_name);
void append_bnb_4bit(io::NamedTensors& out, const std::string& weight_name, const Quant4State& state);

bool has_bnb_int8(const io::WeightSource& source, const std::string& module_name);
Int8State read_bnb_int8(const io::WeightSource& source, const std::string& module_name);
void append_bnb_int8(io::NamedTensors& out, const std::string& module_name, const Int8State& state);

// The config.json "quantization_config" transformers writes (BitsAndBytesConfig.to_dict()) for a model whose
// quantized layers are all 4-bit (`four_bit` their format) or all 8-bit (`eight_bit`). Both at once is a qtune-only
// mix that transformers cannot describe: it is written with load_in_4bit and load_in_8bit both true, which
// transformers refuses outright ("only one can be used at the same time") instead of loading it wrongly.
// `skip_modules`: the linears stored dense.
nlohmann::json bnb_quantization_config(const std::optional<LayerQuant>& four_bit, bool eight_bit,
                                       const std::string& compute_dtype, const std::vector<std::string>& skip_modules);

}  // namespace qtune::quant
