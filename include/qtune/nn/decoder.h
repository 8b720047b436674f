#pragma once
// The causal LM of every family qtune runs (LlamaForCausalLM, MistralForCausalLM, Qwen2/Qwen3ForCausalLM,
// Gemma2/Gemma3ForCausalLM, Phi3ForCausalLM): one decoder whose differences are io::ModelConfig's family options.
// Parameter names follow Hugging Face's ("model.layers.0.mlp.up_proj.weight", "lm_head.weight"), so named_parameters()
// maps one to one onto checkpoint and PEFT keys.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <memory>
#include <vector>

#include "qtune/io/hf_config.h"
#include "qtune/io/weight_source.h"
#include "qtune/nn/attention.h"
#include "qtune/nn/embedding.h"
#include "qtune/nn/kv_cache.h"
#include "qtune/nn/layer_inputs.h"
#include "qtune/nn/linear.h"
#include "qtune/nn/mlp.h"
#include "qtune/nn/rmsnorm.h"
#include "qtune/nn/rope.h"

namespace qtune::nn {

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const io::ModelConfig& config, int64_t index, LinearFactory& factory,
                   const io::WeightSource& weights, at::TensorOptions options);
  at::Tensor forward(const at::Tensor& x, const LayerInputs& in, at::Tensor* cached_keys, at::Tensor* cached_values);
  // The parts, for code that runs them on their own (calibration: AWQ scores a candidate on one block's output).
  RMSNormImpl& input_layernorm() { return *input_layernorm_; }
  // The norm whose output the MLP reads: post_attention_layernorm, or Gemma's pre_feedforward_layernorm.
  RMSNormImpl& mlp_input_norm() { return pre_feedforward_layernorm_ ? *pre_feedforward_layernorm_ : *post_attention_layernorm_; }
  // Its name in the layer ("post_attention_layernorm" or "pre_feedforward_layernorm").
  const char* mlp_input_norm_name() const {
    return pre_feedforward_layernorm_ ? "pre_feedforward_layernorm" : "post_attention_layernorm";
  }
  AttentionImpl& self_attn() { return *self_attn_; }
  MLPImpl& mlp() { return *mlp_; }
  // The rotary tables and mask this layer's attention uses (its kind: full or sliding).
  const AttentionInputs& attention_inputs(const LayerInputs& in) const { return in.of(kind_); }

 private:
  io::LayerAttention kind_;
  std::shared_ptr<RMSNormImpl> input_layernorm_, post_attention_layernorm_;
  // Gemma's sandwich: post_attention_layernorm then closes the attention, these two wrap the MLP. Null otherwise.
  std::shared_ptr<RMSNormImpl> pre_feedforward_layernorm_, post_feedforward_layernorm_;
  std::shared_ptr<AttentionImpl> self_attn_;
  std::shared_ptr<MLPImpl> mlp_;
};

// The trunk ("model."): embeddings, layers, final norm.
class DecoderModelImpl : public torch::nn::Module {
 public:
  DecoderModelImpl(const io::ModelConfig& config, LinearFactory& factory, const io::WeightSource& weights,
                   at::TensorOptions options);
  std::shared_ptr<EmbeddingImpl> embed_tokens;
  std::vector<std::shared_ptr<DecoderLayerImpl>> layers;
  std::shared_ptr<RMSNormImpl> norm;
};

struct ForwardOptions {
  at::Tensor position_ids;  // [B, T] int64; default: cache length + 0..T-1
  at::Tensor segment_ids;   // [B, T] int64; packed samples attend only within their segment
  KVCache* cache = nullptr;
};

class CausalLMImpl : public torch::nn::Module {
 public:
  CausalLMImpl(io::ModelConfig config, LinearFactory& factory, const io::WeightSource& weights,
               at::TensorOptions options);

  // Final hidden states [B, T, hidden] for input_ids [B, T].
  at::Tensor hidden_states(const at::Tensor& input_ids, const ForwardOptions& options = {});
  // Token embeddings [B, T, hidden] in the model dtype (Gemma's scaled by sqrt(hidden)): what the first layer reads.
  at::Tensor embed(const at::Tensor& ids);
  at::Tensor logits(const at::Tensor& hidden);  // [.., vocab] in the model dtype, soft-capped when the family does
  at::Tensor forward(const at::Tensor& input_ids, const ForwardOptions& options = {}) {
    return logits(hidden_states(input_ids, options));
  }

  const io::ModelConfig& config() const { return config_; }
  at::TensorOptions options() const { return options_; }
  const at::Tensor& lm_head_weight() const { return tied_ ? model_->embed_tokens->weight() : lm_head_->weight(); }
  // Gives lm_head a weight of its own, [vocab, hidden] in any dtype, keeping its requires_grad (unties a tied model).
  // LoRA's modules_to_save uses it to train lm_head (in fp32) apart from the embeddings.
  void set_lm_head_weight(at::Tensor weight);
  DecoderModelImpl& trunk() { return *model_; }
  // While training with grad enabled (and no KV cache), each decoder layer keeps only its input and is recomputed in
  // backward (autograd/checkpoint.h): activation memory of one layer instead of all of them.
  // `layers` < 0: every decoder layer recomputes in backward; else only the first `layers` (the others keep their
  // activations: faster, more memory). The gradients are the same either way.
  void set_gradient_checkpointing(bool on, int64_t layers = -1) { checkpointing_ = on, checkpointed_layers_ = layers; }
  bool gradient_checkpointing() const { return checkpointing_; }

 private:
  io::ModelConfig config_;
  at::TensorOptions options_;
  std::shared_ptr<DecoderModelImpl> model_;
  PositionEncoding positions_;
  std::shared_ptr<DenseLinearImpl> lm_head_;  // null when tied to the embeddings
  bool tied_;
  bool checkpointing_ = false;
  int64_t checkpointed_layers_ = -1;
};
using CausalLM = std::shared_ptr<CausalLMImpl>;

}  // namespace qtune::nn
