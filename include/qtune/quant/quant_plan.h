#pragma once
// Which format each linear of the model gets. Default (QLoRA): every decoder projection NF4 with double
// quantization; embeddings, norms and lm_head stay in the compute dtype (they are not built by the factory).
// Rules, tried in order, keep chosen modules in int8 or 16-bit: glob patterns over the module name, matched
// with and without its leading "model." ("layers.0.*", "*.down_proj", "model.layers.1.mlp.up_proj").
// W8A8 (quant/w8a8.h): int8 weights per output channel, and the linear's input quantized per token at each forward.
// Keep (a GGUF base only): each projection stays in the ggml blocks the file stores it in (Q4_0 ... Q6_K), frozen as
// is; one stored as F32/F16/BF16 becomes a dense layer in the compute dtype.
#include <string>
#include <vector>

namespace qtune::quant {

enum class WeightFormat { NF4, FP4, Int8, W8A8, Dense, Keep };

const char* format_name(WeightFormat format);
// nf4 fp4 int8 w8a8 keep, and bf16/fp16/fp32/16bit/none for Dense
WeightFormat parse_weight_format(const std::string& name, const std::string& what);

struct LayerQuant {
  WeightFormat format = WeightFormat::NF4;
  int64_t blocksize = 64;
  bool double_quant = true;
};

struct PlanRule {
  std::string pattern;
  WeightFormat format = WeightFormat::Int8;
};

struct QuantPlan {
  LayerQuant base;               // for modules no rule matches
  std::vector<PlanRule> rules;   // first match wins

  LayerQuant resolve(const std::string& module_name) const;
  bool uses(WeightFormat format) const;  // as the base or in a rule
  void validate(const std::string& what) const;

  // YAML: {format: nf4, block_size: 64, double_quant: true, rules: [{pattern: "layers.0.*", format: int8}, ...]}
  static QuantPlan load_yaml(const std::string& path);
  std::string to_yaml() const;
};

bool glob_match(const std::string& pattern, const std::string& name);

}  // namespace qtune::quant
