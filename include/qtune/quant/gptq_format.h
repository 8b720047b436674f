#pragma once
// Integer-grid weights in the Hugging Face GPTQ checkpoint layout (AutoGPTQ / gptqmodel, what transformers, vLLM
// and the hub's "-GPTQ" models use). For a linear "<module>" with k = 32 / bits codes per int32 word:
//   <module>.qweight  I32 [in / k, out]      input column i of output o at bits·(i % k) of word [i / k, o]
//   <module>.qzeros   I32 [groups, out / k]  output o's zero point at bits·(o % k) of word [g, o / k]
//   <module>.scales   F16 [groups, out]
//   <module>.g_idx    I32 [in]               the group of each input column (act-order permutes it)
// Zero points: checkpoint_format "gptq" (v1, AutoGPTQ's) stores zero − 1, "gptq_v2" the zero itself. gptqmodel
// converts by subtracting or adding 0x11111111 (4 bits; 0x55555555 for 2, 0x01010101 for 8) to the packed int32
// words, borrows and carries included; qtune does the same, so a zero point of 0 (asymmetric groups that are all
// ≥ 0) survives the round trip through gptqmodel exactly as it does through gptqmodel itself.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "qtune/io/safetensors.h"
#include "qtune/io/weight_source.h"
#include "qtune/quant/int_grid.h"

namespace qtune::quant {

enum class GptqCheckpointFormat { V1, V2 };  // "gptq", "gptq_v2"

struct GptqTensors {
  at::Tensor qweight, qzeros, scales, g_idx;  // as above; qzeros always v2 once read
};

// One entry of quantization_config.dynamic (gptqmodel's per-module overrides, which vLLM reads too): modules whose
// name the pattern matches from its start ("+:" or no prefix) take the listed bits / group_size / sym instead of the
// config's; "-:" leaves them unquantized (a plain weight). The first matching entry decides.
struct GptqDynamicRule {
  std::string pattern;  // as written, prefix included
  bool skip = false;
  std::optional<int> bits;
  std::optional<int64_t> group_size;
  std::optional<bool> sym;
  std::regex re;  // the pattern without its prefix
};

// The quantization_config keys a loader needs (transformers' GPTQConfig / gptqmodel's QuantizeConfig).
struct GptqConfig {
  IntGridOptions grid;
  bool desc_act = false;
  bool static_groups = false;
  bool true_sequential = true;
  double damp_percent = 0.01;
  GptqCheckpointFormat checkpoint_format = GptqCheckpointFormat::V1;
  std::vector<GptqDynamicRule> dynamic;

  // The grid of `module_name` ("model.layers.0.mlp.down_proj"); nullopt when a "-:" rule leaves it unquantized.
  std::optional<IntGridOptions> grid_for(const std::string& module_name) const;
  // Adds rules naming exactly `module_name` (its dots escaped): a grid of its own, or unquantized.
  void add_override(const std::string& module_name, const IntGridOptions& grid);
  void add_skip(const std::string& module_name);

  // `where` names config.json in messages.
  static GptqConfig from_json(const nlohmann::json& quantization_config, const std::string& where);
  nlohmann::json to_json() const;
};

// The zero-point convention a checkpoint written on `config`'s grids (its dynamic rules included) should use: gptq (v1,
// what the hub holds) when every grid is symmetric, gptq_v2 when one has zero points. gptqmodel loads an asymmetric v1
// checkpoint only when its own writer stamped it (meta.quantizer gptqmodel >= 0.9.0, after which v1 zeros may have
// wrapped around), so an asymmetric v1 written by qtune would load in transformers but not in gptqmodel or vLLM.
GptqCheckpointFormat default_checkpoint_format(const GptqConfig& config);

// Why a linear of [out_features, in_features] cannot be stored on `grid` in this layout ("" when it can): codes and
// zero points fill whole int32 words, and the groups divide the inputs.
std::string gptq_layout_problem(const IntGridOptions& grid, int64_t out_features, int64_t in_features);

// Packs codes and zero points (v2) into int32 words, rounds the scales to fp16.
GptqTensors pack_gptq(const IntQuantized& q);
// The codes, zeros, scales (fp32 from the fp16 stored) and g_idx of v2 tensors.
IntQuantized unpack_gptq(const GptqTensors& t, const IntGridOptions& grid);
// Stored v1 zeros → v2 and back, on the packed words.
at::Tensor gptq_zeros_v1_to_v2(const at::Tensor& qzeros, int bits);
at::Tensor gptq_zeros_v2_to_v1(const at::Tensor& qzeros, int bits);

bool has_gptq(const io::WeightSource& source, const std::string& module_name);
// Reads and validates the four tensors of `module_name` (shapes for [out, in] on `grid`, g_idx in range), zeros as
// v2 (`config` says how they are stored).
GptqTensors read_gptq(const io::WeightSource& source, const std::string& module_name, int64_t out_features,
                      int64_t in_features, const IntGridOptions& grid, const GptqConfig& config);
// The four tensors of `module_name`, zeros converted to what `format` stores.
void append_gptq(io::NamedTensors& out, const std::string& module_name, const GptqTensors& v2, int bits,
                 GptqCheckpointFormat format);

}  // namespace qtune::quant
