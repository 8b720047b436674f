#pragma once
// Which projections get a LoRA adapter and with what rank and scale, as PEFT's LoraConfig decides it
// (peft/tuners/lora/config.py and model.py: target_modules, rank_pattern, alpha_pattern, use_rslora).
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qtune::lora {

// The seven projections of a Llama-style layer, the only modules the decoder builds through a LinearFactory.
// "all-linear" means all of a model's (PEFT's "all-linear" is every linear but the output layer: the same set here).
inline const std::vector<std::string>& projection_names() {
  static const std::vector<std::string> names{"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                              "gate_proj", "up_proj", "down_proj"};
  return names;
}

// Every name a target may end in: the seven, and Phi-3's fused qkv_proj and gate_up_proj (kept fused, as PEFT
// targets them). Which of them a model has is io::layer_linears'.
inline const std::vector<std::string>& target_names() {
  static const std::vector<std::string> names{"q_proj",  "k_proj",   "v_proj",    "qkv_proj",    "o_proj",
                                              "gate_proj", "up_proj", "gate_up_proj", "down_proj"};
  return names;
}

// What one targeted module gets.
struct LoraTarget {
  int64_t r = 0;
  double alpha = 0;
  double scale = 0;  // alpha / r, or alpha / sqrt(r) with rsLoRA
};

struct LoraConfig {
  // Defaults are the recipe's (r 16, alpha 32, dropout 0.05: a common QLoRA setting for 7B models), not PEFT's
  // (r 8, alpha 8, dropout 0) nor the QLoRA paper's (r 64, alpha 16, dropout 0.1 for 7B/13B).
  int64_t r = 16;
  double alpha = 32;
  double dropout = 0.05;
  // Names matched as PEFT matches a list: a module is targeted when its name equals an entry or ends with "." + the
  // entry, so short names ("q_proj") target every layer's projection and full names ("model.layers.0.self_attn.q_proj",
  // as PEFT saves an "all-linear" adapter) one module. Or {"all-linear"}: every projection.
  std::vector<std::string> target_modules{"all-linear"};
  bool use_rslora = false;  // scale alpha / sqrt(r) instead of alpha / r (Kalajdzievski 2023)
  // Per-module overrides. Keys are regexes matched as PEFT does, `(.*\.)?KEY$` against the full module name
  // ("model.layers.1.self_attn.q_proj"). Where several keys match one module, the first in key order wins
  // (PEFT takes the first in insertion order): keep patterns from overlapping.
  std::map<std::string, int64_t> rank_pattern;
  std::map<std::string, double> alpha_pattern;
  // Modules trained in full besides the adapters: "lm_head" and/or "embed_tokens" (see inject.h).
  std::vector<std::string> modules_to_save;

  // Throws qtune::Error naming the bad field and value.
  void validate() const;
  // The adapter of `module_name` (a Hugging Face module name), or nullopt when it is not targeted.
  std::optional<LoraTarget> resolve(const std::string& module_name) const;
};

}  // namespace qtune::lora
