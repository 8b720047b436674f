#pragma once
// What a run's quantization-aware training simulates in each projection, from the recipe's quant section. quant.qat
// names either one format for every targeted linear (nf4, int4, q4_k, ...) or a file type of `qtune export --gguf`
// (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k): then llama-quantize's mix, as the export applies it, gives
// each projection its type (Q6_K for some attn_v / ffn_down layers of the _k_m mixes, the fallbacks for rows a block
// does not divide, F16 last), so the model trained is the file written.
#include <optional>
#include <string>

#include "qtune/io/hf_config.h"
#include "qtune/qat/qat_options.h"
#include "qtune/quant/fake_quant.h"
#include "qtune/train/recipe.h"

namespace qtune::train {

// Whether quant.qat names a quantized GGUF file type (its projections then follow the export's type mix).
bool is_gguf_qat_mix(const std::string& qat);

// quant.qat as one format for every targeted linear: nullopt for none or a GGUF file type (whose mix decides per
// layer). Errors name `where` (the recipe's file) and the key.
std::optional<quant::FakeQuantSpec> qat_format_of(const QuantSection& quant, const std::string& where);

struct RunQat {
  qat::QatPlan plan;  // empty when the recipe has no QAT
  // "q4_k_m mix: q5_0 x150, q6_k x60" or "int4 g32 symmetric, activations int8 per token"
  std::string summary;
};

// The plan for `config`'s projections: those lora.targets names (every one, all-linear, in a full run too).
RunQat qat_plan_of(const Recipe& recipe, const io::ModelConfig& config);

}  // namespace qtune::train
