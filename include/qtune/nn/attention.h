#pragma once
// Grouped-query self-attention with rotary embeddings and an optional KV cache, with the families' options
// (io::ModelConfig): q/k/v and o biases, q_norm/k_norm over each head before RoPE, a fused qkv_proj split after the
// matmul, Gemma's query_pre_attn_scalar and soft-capped scores.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <memory>
#include <optional>

#include "qtune/io/hf_config.h"
#include "qtune/nn/layer_inputs.h"
#include "qtune/nn/linear.h"
#include "qtune/nn/rmsnorm.h"

namespace qtune::nn {

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const io::ModelConfig& config, const std::string& prefix, LinearFactory& factory,
                const io::WeightSource& weights, at::TensorOptions options);
  // x [B, T, hidden]; the layer's rotary tables [B, T, head_dim] and mask. With a cache, appends this step's
  // keys/values to it.
  at::Tensor forward(const at::Tensor& x, const AttentionInputs& in, at::Tensor* cached_keys = nullptr,
                     at::Tensor* cached_values = nullptr);

 private:
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask);

  int64_t heads_, kv_heads_, head_dim_;
  double dropout_;  // config.attention_dropout, applied in training mode only
  double scale_;
  std::optional<double> softcap_;
  Linear q_proj_, k_proj_, v_proj_, qkv_proj_, o_proj_;  // q/k/v or qkv (fused), never both
  std::shared_ptr<RMSNormImpl> q_norm_, k_norm_;          // null without q/k norms
};

}  // namespace qtune::nn
