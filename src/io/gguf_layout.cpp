#include "qtune/io/gguf_layout.h"

#include <utility>
#include <vector>

#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::io {
namespace {

using Names = std::vector<std::pair<const char*, const char*>>;  // Hugging Face suffix, GGUF suffix

// Tensors outside the decoder layers.
const Names kModelNames = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

// Decoder-layer tensors under "model.layers.N." / "blk.N." (llama.cpp's LLM_TENSOR_* names).
Names layer_names(const GgufLayout& l) {
  Names n = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.o_proj.bias", "attn_output.bias"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},
      {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  if (l.fused_qkv) {
    n.push_back({"self_attn.qkv_proj.weight", "attn_qkv.weight"});
  } else {
    for (const auto& p : Names{{"self_attn.q_proj.weight", "attn_q.weight"},
                               {"self_attn.k_proj.weight", "attn_k.weight"},
                               {"self_attn.v_proj.weight", "attn_v.weight"},
                               {"self_attn.q_proj.bias", "attn_q.bias"},
                               {"self_attn.k_proj.bias", "attn_k.bias"},
                               {"self_attn.v_proj.bias", "attn_v.bias"}})
      n.push_back(p);
  }
  if (l.fused_gate_up) {
    n.push_back({"mlp.gate_up_proj.weight", "ffn_up.weight"});
  } else {
    n.push_back({"mlp.gate_proj.weight", "ffn_gate.weight"});
    n.push_back({"mlp.up_proj.weight", "ffn_up.weight"});
  }
  if (l.sandwich_norms) {
    n.push_back({"post_attention_layernorm.weight", "post_attention_norm.weight"});
    n.push_back({"pre_feedforward_layernorm.weight", "ffn_norm.weight"});
    n.push_back({"post_feedforward_layernorm.weight", "post_ffw_norm.weight"});
  } else {
    n.push_back({"post_attention_layernorm.weight", "ffn_norm.weight"});
  }
  return n;
}

// `name` in the other scheme (to_gguf: Hugging Face → GGUF, else back); empty when neither table has it.
std::string rename(const GgufLayout& l, const std::string& name, bool to_gguf) {
  auto pick = [](const std::pair<const char*, const char*>& p, bool gguf) { return gguf ? p.second : p.first; };
  for (const auto& p : kModelNames)
    if (name == pick(p, !to_gguf)) return pick(p, to_gguf);
  const std::string from = to_gguf ? "model.layers." : "blk.", to = to_gguf ? "blk." : "model.layers.";
  if (name.rfind(from, 0) != 0) return "";
  const auto dot = name.find('.', from.size());
  if (dot == std::string::npos) return "";
  const std::string layer = name.substr(from.size(), dot - from.size());
  if (layer.empty() || layer.find_first_not_of("0123456789") != std::string::npos) return "";
  const std::string rest = name.substr(dot + 1);
  for (const auto& p : layer_names(l))
    if (rest == pick(p, !to_gguf)) return to + layer + "." + pick(p, to_gguf);
  return "";
}

}  // namespace

std::string GgufLayout::gguf_name(const std::string& hf_name) const { return rename(*this, hf_name, true); }

std::string GgufLayout::hf_name(const std::string& gguf_name) const { return rename(*this, gguf_name, false); }

int64_t GgufLayout::rotary_heads(const std::string& name) const {
  if (!interleaved_rotary) return 0;
  if (ends_with(name, "q_proj.weight") || ends_with(name, "q_proj.bias")) return heads;
  if (ends_with(name, "k_proj.weight") || ends_with(name, "k_proj.bias")) return kv_heads;
  return 0;
}

bool GgufLayout::stored_plus_one(const std::string& name) const {
  return norms_plus_one && ends_with(name, "norm.weight");
}

at::Tensor GgufLayout::to_gguf(const std::string& name, const at::Tensor& value) const {
  if (const int64_t h = rotary_heads(name)) return permute_rotary_rows(value, h);
  // In fp32, as convert_hf_to_gguf adds 1 to the float32 tensor before it stores it.
  if (stored_plus_one(name)) return value.to(at::kFloat) + 1;
  return value;
}

at::Tensor GgufLayout::from_gguf(const std::string& name, const at::Tensor& value) const {
  if (const int64_t h = rotary_heads(name)) return unpermute_rotary_rows(value, h);
  if (stored_plus_one(name)) return value.to(at::kFloat) - 1;
  return value;
}

std::string gguf_architecture(const std::string& model_type) {
  // convert_hf_to_gguf writes Mistral's models as llama (a GGUF that says mistral is read the same way).
  if (model_type == "mistral") return "llama";
  if (model_type == "llama" || model_type == "qwen2" || model_type == "qwen3" ||
      model_type == "gemma2" || model_type == "phi3")
    return model_type;
  if (model_type == "gemma3_text") return "gemma3";
  return "";
}

GgufLayout gguf_layout(const ModelConfig& c) {
  GgufLayout l;
  l.architecture = gguf_architecture(c.model_type);
  if (l.architecture.empty())
    fail("model_type '{}' has no llama.cpp architecture qtune reads or writes", c.model_type);
  // convert_hf_to_gguf permutes q/k rows only in its LlamaModel (llama, mistral); llama.cpp runs the others'
  // RoPE on halves.
  l.interleaved_rotary = c.model_type == "llama" || c.model_type == "mistral";
  l.norms_plus_one = c.norm_plus_one;
  l.sandwich_norms = c.sandwich_norms;
  l.fused_qkv = c.fused_qkv;
  l.fused_gate_up = c.fused_gate_up;
  l.heads = c.num_attention_heads;
  l.kv_heads = c.num_key_value_heads;
  return l;
}

at::Tensor unpermute_rotary_rows(const at::Tensor& w, int64_t heads) {
  const auto rows = w.size(0);
  if (heads <= 0 || rows % (2 * heads) != 0)
    fail("internal: cannot unpermute {} rotary rows over {} heads", rows, heads);
  // GGUF (convert_hf_to_gguf.permute): reshape(heads, 2, half, ...).swapaxes(1, 2). Its inverse swaps back.
  std::vector<int64_t> interleaved{heads, rows / heads / 2, 2};
  for (int64_t d = 1; d < w.dim(); ++d) interleaved.push_back(w.size(d));
  return w.reshape(interleaved).transpose(1, 2).reshape(w.sizes()).contiguous();
}

at::Tensor permute_rotary_rows(const at::Tensor& w, int64_t heads) {
  const auto rows = w.size(0);
  if (heads <= 0 || rows % (2 * heads) != 0) fail("internal: cannot permute {} rotary rows over {} heads", rows, heads);
  std::vector<int64_t> halves{heads, 2, rows / heads / 2};
  for (int64_t d = 1; d < w.dim(); ++d) halves.push_back(w.size(d));
  return w.reshape(halves).transpose(1, 2).reshape(w.sizes()).contiguous();
}

}  // namespace qtune::io
