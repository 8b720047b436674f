#pragma once
// How llama.cpp stores one decoder family in a GGUF: its general.architecture, its tensor names, and what its
// converter (convert_hf_to_gguf.py) changes in the values. Reading undoes what writing does, so a GGUF export and
// `qtune convert` are each other's inverse, and QLoRA on the file's own blocks sees the Hugging Face layout.
//   - llama / mistral: q_proj and k_proj rows are permuted so that rotary pairs are interleaved (llama.cpp's "normal"
//     RoPE); every other family keeps the halves of Hugging Face's rotate-half ("neox" RoPE) and its rows as they are.
//   - gemma2 / gemma3: every norm weight w (the layers', q/k norms and the final one) is stored as w + 1, what
//     Gemma's RMSNorm multiplies by.
//   - gemma2 / gemma3: post_attention_layernorm is blk.N.post_attention_norm and the MLP's input norm
//     (pre_feedforward_layernorm) is blk.N.ffn_norm; Llama's post_attention_layernorm is blk.N.ffn_norm.
//   - phi3: self_attn.qkv_proj is blk.N.attn_qkv and mlp.gate_up_proj is blk.N.ffn_up (gate rows first).
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "qtune/io/hf_config.h"

namespace qtune::io {

struct GgufLayout {
  std::string architecture = "llama";  // general.architecture, and the prefix of its metadata keys
  bool interleaved_rotary = true;
  bool norms_plus_one = false;
  bool sandwich_norms = false;
  bool fused_qkv = false;
  bool fused_gate_up = false;
  int64_t heads = 0, kv_heads = 0;

  // "model.layers.3.mlp.up_proj.weight" → "blk.3.ffn_up.weight"; empty when the name has no GGUF counterpart.
  std::string gguf_name(const std::string& hf_name) const;
  // The other way; empty when qtune has no place for the GGUF tensor.
  std::string hf_name(const std::string& gguf_name) const;
  // The heads over which llama.cpp interleaves the rotary rows of `hf_name` (q_proj: heads, k_proj: kv_heads); 0 for
  // every other tensor and for every tensor of a family whose rows are stored as they are.
  int64_t rotary_heads(const std::string& hf_name) const;
  // Whether `hf_name` is a norm weight stored as w + 1.
  bool stored_plus_one(const std::string& hf_name) const;
  // A Hugging Face tensor as the GGUF stores it, and back.
  at::Tensor to_gguf(const std::string& hf_name, const at::Tensor& value) const;
  at::Tensor from_gguf(const std::string& hf_name, const at::Tensor& value) const;
};

// The layout of `c`'s family; an error naming the model_type when llama.cpp has no architecture qtune writes for it.
GgufLayout gguf_layout(const ModelConfig& c);

// llama.cpp's architecture for a model_type ("gemma3_text" → "gemma3", "mistral" → "llama"); empty when there is none.
std::string gguf_architecture(const std::string& model_type);

// Undoes convert_hf_to_gguf's permute for a q_proj/k_proj weight (or bias) of `heads` heads.
at::Tensor unpermute_rotary_rows(const at::Tensor& w, int64_t heads);
// convert_hf_to_gguf's permute itself (rotary halves to interleaved pairs per head), what a GGUF export writes.
at::Tensor permute_rotary_rows(const at::Tensor& w, int64_t heads);

}  // namespace qtune::io
