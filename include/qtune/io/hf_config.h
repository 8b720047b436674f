#pragma once
// A Hugging Face `config.json` for model_type "llama" or "mistral", in both the transformers 4 layout
// (rope_theta + rope_scaling) and the transformers 5 layout (rope_parameters). Anything the decoder cannot
// honour is an error naming the key, never silently ignored; a missing key takes the default of transformers'
// config class for the model_type (MistralConfig: sliding_window 4096, 131072 positions, 8 kv heads).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qtune::io {

struct RopeConfig {
  std::string type = "default";  // default | linear | llama3
  double theta = 10000.0;
  double factor = 1.0;                          // linear, llama3
  double low_freq_factor = 1.0;                 // llama3
  double high_freq_factor = 4.0;                // llama3
  int64_t original_max_position_embeddings = 0; // llama3
};

struct ModelConfig {
  std::string model_type = "llama";
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  int64_t max_position_embeddings = 2048;
  int64_t vocab_size = 0;
  bool tie_word_embeddings = false;
  std::optional<int64_t> sliding_window;  // mistral: a query sees keys with q_pos - k_pos < window
  bool attention_bias = false;
  bool mlp_bias = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
  double initializer_range = 0.02;
  double attention_dropout = 0.0;  // on the attention probabilities, in training only (as transformers)
  std::string torch_dtype = "float32";
  nlohmann::json quantization_config;  // null unless the checkpoint is stored quantized (bitsandbytes layout)

  static ModelConfig from_json(const nlohmann::json& json, const std::string& source);
  static ModelConfig load(const std::string& path_or_dir);  // a config.json or the directory holding it
  nlohmann::json to_json() const;                           // transformers-4 layout, readable by both

  int64_t kv_groups() const { return num_attention_heads / num_key_value_heads; }
  int64_t num_parameters() const;  // embeddings + layers + norm (+ lm_head when untied)
};

}  // namespace qtune::io
