#pragma once
// The decoder families qtune runs, each written as its differences from Llama (as transformers' modular_*.py files
// read): which config.json keys it has and their defaults, what they set among ModelConfig's family options, and the
// linears of its layers. ModelConfig::from_json parses the keys every family shares and hands the rest to
// parse_family_options; nn/, LoRA, the quantizers and the calibration drivers ask layer_linears() what a layer holds
// instead of naming projections themselves. Torch-free, like hf_config.cpp (their fuzzer builds them alone).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qtune/io/hf_config.h"

namespace qtune::io {

// The model_types ModelConfig::from_json accepts, in the order error messages list them.
const std::vector<std::string>& supported_model_types();

// transformers' class of a model_type's causal LM ("Qwen2ForCausalLM"), what config.json's "architectures" names.
std::string causal_lm_architecture(const std::string& model_type);

// Defaults of the keys every family shares, as transformers' config class for the model_type sets them.
struct FamilyDefaults {
  std::optional<int64_t> num_key_value_heads;  // nullopt: num_attention_heads
  std::optional<int64_t> head_dim;             // nullopt: hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
};
FamilyDefaults family_defaults(const std::string& model_type);  // model_type must be supported

// Reads the family's own keys (RoPE, windows, activation, biases, norms, soft-caps ...) from `j` into `c`, whose shared
// fields from_json has already read. A key the family cannot honour is an error naming `src` and the key.
void parse_family_options(const nlohmann::json& j, const std::string& src, ModelConfig& c);
// Writes those keys into `j` (ModelConfig::to_json), so that transformers rebuilds the same model.
void write_family_options(const ModelConfig& c, nlohmann::json& j);

// One linear of a decoder layer, named under "model.layers.N." ("self_attn.q_proj", "mlp.gate_up_proj").
struct LayerLinear {
  std::string name;
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = false;
};
// The linears of every decoder layer of `c`, in the order the forward runs them.
std::vector<LayerLinear> layer_linears(const ModelConfig& c);
// The same linears grouped by the input they read, in forward order: {q, k, v}, {o}, {gate, up}, {down}
// (Phi-3: {qkv}, {o}, {gate_up}, {down}). GPTQ quantizes one group at a time.
std::vector<std::vector<std::string>> layer_linear_groups(const ModelConfig& c);

}  // namespace qtune::io
