#pragma once
// 4-bit integer-grid weights in AWQ's GEMM checkpoint layout (AutoAWQ, llm-awq, gptqmodel's FORMAT.GEMM: what
// transformers, vLLM and the hub's "-AWQ" models use). For a linear "<module>" of [out, in] with group size g:
//   <module>.qweight  I32 [in, out / 8]      8 output columns per word, in AWQ's interleaved order: the code of
//                                            output 8w + kAwqOrder[j] at bits 4j of word [i, w]
//   <module>.qzeros   I32 [in / g, out / 8]  the zero points (not minus one), packed the same way
//   <module>.scales   F16 [in / g, out]
// and value = scale · (code − zero). There is no g_idx: AWQ's groups are always consecutive input columns. The same
// grid as GPTQ's v2 layout with g_idx = i / g, so a reader converts to GptqTensors and the GPTQ kernels dequantize.
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>

#include "qtune/io/safetensors.h"
#include "qtune/io/weight_source.h"
#include "qtune/quant/gptq_format.h"
#include "qtune/quant/int_grid.h"

namespace qtune::quant {

inline constexpr std::array<int, 8> kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7};

struct AwqTensors {
  at::Tensor qweight, qzeros, scales;  // as above
};

// The quantization_config keys of an AWQ GEMM checkpoint (transformers' AwqConfig).
struct AwqConfig {
  IntGridOptions grid{4, 128, false};  // zero_point: true ⇔ !sym

  // `where` names config.json in messages.
  static AwqConfig from_json(const nlohmann::json& quantization_config, const std::string& where);
  nlohmann::json to_json() const;
};

// Packs 4-bit codes and zero points (consecutive groups: g_idx must be i / group_size), scales to fp16.
AwqTensors pack_awq(const IntQuantized& q);
IntQuantized unpack_awq(const AwqTensors& t, const IntGridOptions& grid);

// Reads and validates the three tensors of `module_name` for a linear of [out, in].
AwqTensors read_awq(const io::WeightSource& source, const std::string& module_name, int64_t out_features,
                    int64_t in_features, const AwqConfig& config);
void append_awq(io::NamedTensors& out, const std::string& module_name, const AwqTensors& t);

// The same weight in GPTQ's v2 layout (what GptqWeight and its kernels hold).
GptqTensors awq_to_gptq(const AwqTensors& t, const IntGridOptions& grid);

}  // namespace qtune::quant
