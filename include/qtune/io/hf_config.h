#pragma once
// A Hugging Face `config.json` of one of the decoder families qtune runs (model_type llama, mistral, qwen2, qwen3,
// gemma2, gemma3_text or a gemma3 whose text_config holds one, phi3), in both the transformers 4 layout
// (rope_theta + rope_scaling) and the transformers 5 layout (rope_parameters). The families are options of one
// decoder: the fields under "Family options" below, which nn/ reads and nothing else decides. Anything the decoder
// cannot honour is an error naming the key, never silently ignored; a missing key takes the default of transformers'
// config class for the model_type (MistralConfig: sliding_window 4096; Gemma2Config: head_dim 256, soft-caps 50/30 ...).
// io/model_family.h holds the per-family parts: which keys each family has, its defaults and its linears.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qtune::io {

struct RopeConfig {
  std::string type = "default";  // default | linear | llama3 | longrope (Phi-3's)
  double theta = 10000.0;
  double factor = 1.0;                          // linear, llama3
  double low_freq_factor = 1.0;                 // llama3
  double high_freq_factor = 4.0;                // llama3
  int64_t original_max_position_embeddings = 0; // llama3, longrope (sequences longer than it take long_factor)
  std::vector<double> short_factor, long_factor;  // longrope: one divisor per frequency (head_dim / 2 each)
  double attention_factor = 1.0;                // longrope: cos and sin are scaled by it
};

// The gate activation of the gated MLP: down(act(gate(x)) * up(x)).
enum class Activation {
  SiLU,      // SwiGLU: "silu" (Llama, Mistral, Qwen, Phi-3)
  GeluTanh,  // GeGLU with the tanh approximation: "gelu_pytorch_tanh" (Gemma 2/3)
};

// Which keys a layer's queries see: all earlier ones, or those less than sliding_window positions back.
enum class LayerAttention { Full, Sliding };

struct ModelConfig {
  std::string model_type = "llama";
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;  // the full-attention layers' (all layers' unless local_rope is set)
  int64_t max_position_embeddings = 2048;
  int64_t vocab_size = 0;
  bool tie_word_embeddings = false;
  std::optional<int64_t> sliding_window;  // a sliding layer's query sees keys with q_pos - k_pos < window
  bool attention_bias = false;  // biases on q, k, v and o (Llama's attention_bias)
  bool mlp_bias = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
  double initializer_range = 0.02;
  double attention_dropout = 0.0;  // on the attention probabilities, in training only (as transformers)
  std::string torch_dtype = "float32";
  nlohmann::json quantization_config;  // null unless the checkpoint is stored quantized (bitsandbytes, GPTQ, AWQ, compressed-tensors)

  // ---- Family options (what a family changes in the one decoder; llama's values are the defaults) ----
  // Biases on q, k and v only, not on o (Qwen2). attention_bias puts them on all four.
  bool qkv_bias = false;
  // RMSNorm scales by (1 + w), the product taken in fp32 before the cast back (Gemma; llama.cpp stores 1 + w).
  bool norm_plus_one = false;
  // Four norms per layer (Gemma 2/3): post_attention_layernorm on the attention's output before the residual add,
  // pre_feedforward_layernorm / post_feedforward_layernorm around the MLP. Otherwise post_attention_layernorm is the
  // MLP's input norm, as in Llama.
  bool sandwich_norms = false;
  // self_attn.q_norm / k_norm: RMSNorm over head_dim of each query and key head, before RoPE (Qwen3, Gemma 3).
  bool qk_norm = false;
  Activation activation = Activation::SiLU;
  // Embeddings multiplied by sqrt(hidden_size) rounded to the embedding's dtype, as transformers' Gemma does.
  bool scale_embeddings = false;
  // Attention scores scaled by query_pre_attn_scalar^-1/2 (Gemma) instead of head_dim^-1/2; 0 = head_dim.
  double query_pre_attn_scalar = 0;
  // cap * tanh(x / cap) on the attention scores (Gemma 2) and on the final logits (Gemma 2, optional in Gemma 3).
  std::optional<double> attn_logit_softcapping;
  std::optional<double> final_logit_softcapping;
  // One entry per layer (transformers' layer_types). Empty in a hand-built config: every layer slides when
  // sliding_window is set (Mistral), none otherwise.
  std::vector<LayerAttention> layer_types;
  // The sliding layers' own RoPE (Gemma 3: rope_local_base_freq, unscaled); unset: they use `rope`.
  std::optional<RopeConfig> local_rope;
  // Phi-3: the checkpoint (and PEFT) hold self_attn.qkv_proj = [q; k; v] and mlp.gate_up_proj = [gate; up] as
  // single linears; the decoder splits their outputs.
  bool fused_qkv = false;
  bool fused_gate_up = false;

  static ModelConfig from_json(const nlohmann::json& json, const std::string& source);
  static ModelConfig load(const std::string& path_or_dir);  // a config.json or the directory holding it
  nlohmann::json to_json() const;                           // transformers-4 layout, readable by both

  int64_t kv_groups() const { return num_attention_heads / num_key_value_heads; }
  int64_t num_parameters() const;  // embeddings + layers + norms (+ lm_head when untied)
  LayerAttention layer_attention(int64_t layer) const;
  // The window layer `layer` attends within; nullopt for a full-attention layer.
  std::optional<int64_t> layer_window(int64_t layer) const;
  bool has_sliding_layers() const;
  double attention_scale() const;  // what q·k is multiplied by before the softmax
  bool has_o_bias() const { return attention_bias; }
  bool has_qkv_bias() const { return attention_bias || qkv_bias; }
};

}  // namespace qtune::io
